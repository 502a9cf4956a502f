"""Command-line tools: the ``cassie-rl`` entry point and offline render, record and plot tools."""
