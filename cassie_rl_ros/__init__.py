"""Reinforcement learning for Cassie: environments, policies and PPO training."""
