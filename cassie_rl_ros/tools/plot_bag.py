"""``plot_bag``: the five rollout plots from a rosbag2 recording (simulated or hardware run).

    ros2 run cassie_rl_ros plot_bag runs/walk1 [--out DIR] [--format png|pdf] [--start S --end S]
    cassie-rl plot runs/walk1

Reads MCAP and sqlite3 bags (metadata.yaml of Jazzy, version 8, and Kilted, version 9; a bare
``.mcap`` / ``.db3`` file works too) with ``rosbags`` and makes:

1. ``state``: pelvis height, forward speed with the commanded speed, left/right foot height;
2. ``motor_torques``: 2 x 5 grid, rows left/right leg, columns hip roll, hip yaw, hip pitch,
   knee, foot (N·m, the effort of /cassie/joint_states);
3. ``ground_reaction_forces``: force on each foot, world axes (N);
4. ``pd_targets``: position targets of /cassie/pd_targets against measured motor positions (rad);
5. ``policy_actions``: the raw policy output on /cassie/policy_action.

Time axis: seconds since the first message of the bag, from the bag's receive timestamps, the same
clock for every topic (topics without a header, /cassie/cmd_vel and /cassie/policy_action, have no
other). ``--start`` / ``--end`` are on that axis.

A missing topic is named in a message and in the figure (a panel says what is missing); the other
figures still come out. A bag that cannot be read (missing, corrupt, truncated) gives one line on
stderr and exit code 1. Messages are decoded leniently about trailing bytes: Fast DDS pads a CDR
message to a multiple of 8 bytes (e.g. a JointState with empty velocity/effort arrays), which
rosbags' strict ``deserialize_cdr`` rejects as a size mismatch.
"""

from __future__ import annotations

import argparse
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cassie_sim_ros.constants import LEG_MOTORS, MOTOR_NAMES, SIDES

JOINT_STATES = '/cassie/joint_states'
GROUND_TRUTH = '/cassie/ground_truth'
STATE_ESTIMATE = '/cassie/state_estimate'
CMD_VEL = '/cassie/cmd_vel'
PD_TARGETS = '/cassie/pd_targets'
POLICY_ACTION = '/cassie/policy_action'
FOOT_FORCES = {side: f'/cassie/foot_forces/{side}' for side in SIDES}
FOOT_POSITIONS = {side: f'/cassie/foot_positions/{side}' for side in SIDES}
"""Foot positions (world frame) are not published by the simulator node yet; a bag that has
them (geometry_msgs/PointStamped or PoseStamped) gets the foot-height panel filled in."""

PLOTS = ('state', 'motor_torques', 'ground_reaction_forces', 'pd_targets', 'policy_actions')
TIME_LABEL = 'time since start of recording (s)'
MOTOR_LABELS = {m: m.replace('_', ' ') for m in LEG_MOTORS}
SIDE_COLORS = {'left': 'tab:blue', 'right': 'tab:red'}
AXIS_COLORS = {'x': 'tab:red', 'y': 'tab:green', 'z': 'tab:blue'}
OUTSIDE = {'loc': 'upper left', 'bbox_to_anchor': (1.005, 1.0), 'fontsize': 9}
"""Legend to the right of its axes, where it never hides data."""


class BagError(Exception):
    """The bag cannot be read; the message says why (shown without a traceback)."""


@dataclass
class Series:
    """One plotted quantity from one topic.

    ``t``: receive time, s since the bag start (the plots' time axis); ``values``: (N,) or (N, k);
    ``stamp``: the messages' header stamps in s (NaN for messages without a header).
    """

    topic: str
    t: np.ndarray
    values: np.ndarray
    stamp: np.ndarray


@dataclass
class BagData:
    path: Path
    start_ns: int
    duration_s: float
    topics: dict[str, str]  # topic -> message type, everything in the bag
    series: dict[str, Series] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- decoding


_TYPESTORE = None


def typestore():
    global _TYPESTORE
    if _TYPESTORE is None:
        from rosbags.typesys import Stores, get_typestore

        _TYPESTORE = get_typestore(Stores.ROS2_KILTED)
    return _TYPESTORE


def deserialize(raw: bytes | memoryview, msgtype: str):
    """Decode one CDR message, accepting trailing padding after the last field.

    ROS 2's own readers (Fast CDR) ignore bytes after the last field; rosbags'
    ``deserialize_cdr`` refuses more than 3 of them, and Fast DDS pads to 8.
    """
    from rosbags.serde import SerdeError

    if len(raw) < 4 or bytes(raw[:2]) not in (b'\x00\x00', b'\x00\x01'):
        raise SerdeError(f'{msgtype}: not a CDR message (bad encapsulation header)')
    store = typestore()
    msgdef = store.get_msgdef(msgtype)
    func = msgdef.deserialize_cdr_le if raw[1] else msgdef.deserialize_cdr_be
    try:
        message, pos = func(memoryview(raw)[4:], 0, msgdef.cls, store)
    except (struct.error, UnicodeDecodeError, ValueError, IndexError) as err:
        raise SerdeError(f'{msgtype}: could not decode: {err}') from None
    if pos > len(raw) - 4:
        raise SerdeError(f'{msgtype}: message is {len(raw)} bytes, its fields need more')
    return message


def _stamp_s(t_ns: int, start_ns: int) -> float:
    return (t_ns - start_ns) * 1e-9


class _ByName:
    """Values of a JointState field in MOTOR_NAMES order (NaN for a motor or field not there)."""

    def __init__(self):
        self.cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, names, values) -> np.ndarray:
        key = tuple(names)
        if key not in self.cache:
            index = {n: i for i, n in enumerate(key)}
            dst = np.array([k for k, m in enumerate(MOTOR_NAMES) if m in index], dtype=int)
            src = np.array([index[MOTOR_NAMES[k]] for k in dst], dtype=int)
            self.cache[key] = (dst, src)
        dst, src = self.cache[key]
        out = np.full(len(MOTOR_NAMES), np.nan)
        values = np.asarray(values, dtype=float)
        if len(values) == len(names) and len(dst):
            out[dst] = values[src]
        return out


def _extractors():
    """topic -> function(message) -> {series name: row}."""
    by_name = _ByName()

    def joint_states(m):
        return {'motor_position': by_name(m.name, m.position),
                'motor_torque': by_name(m.name, m.effort)}

    def pd_targets(m):
        return {'pd_target_position': by_name(m.name, m.position)}

    def odometry(prefix):
        def extract(m):
            # The twist of nav_msgs/Odometry is in the child (pelvis) frame: x is forward.
            return {f'{prefix}pelvis_height': m.pose.pose.position.z,
                    f'{prefix}forward_speed': m.twist.twist.linear.x}
        return extract

    def cmd_vel(m):
        return {'commanded_speed': m.linear.x}

    def policy_action(m):
        return {'policy_action': np.asarray(m.data, dtype=float)}

    def foot_force(side):
        def extract(m):
            f = m.wrench.force
            return {f'foot_force_{side}': np.array([f.x, f.y, f.z])}
        return extract

    def foot_position(side):
        def extract(m):
            point = m.point if hasattr(m, 'point') else m.pose.position
            return {f'foot_height_{side}': point.z}
        return extract

    out = {JOINT_STATES: joint_states, PD_TARGETS: pd_targets,
           GROUND_TRUTH: odometry('gt_'), STATE_ESTIMATE: odometry('est_'),
           CMD_VEL: cmd_vel, POLICY_ACTION: policy_action}
    for side in SIDES:
        out[FOOT_FORCES[side]] = foot_force(side)
        out[FOOT_POSITIONS[side]] = foot_position(side)
    return out


def _stack(rows: list) -> np.ndarray:
    """Rows of equal or differing length (a policy's action size) as one float array."""
    if not rows:
        return np.zeros((0,))
    if np.ndim(rows[0]) == 0:
        return np.asarray(rows, dtype=float)
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def read_bag(path: Path | str, start: float | None = None, end: float | None = None) -> BagData:
    """Read the plotted series from a bag; raises ``BagError`` when the bag cannot be read.

    ``start`` / ``end``: seconds since the first message of the bag.
    """
    from rosbags.rosbag2 import Reader
    from rosbags.serde import SerdeError

    path = Path(path)
    if not path.exists():
        raise BagError(f'{path} does not exist')
    if path.is_dir() and not (path / 'metadata.yaml').exists():
        raise BagError(f'{path} has no metadata.yaml: not a rosbag2 bag, or a recording that '
                       'was killed before it closed the bag')
    extractors = _extractors()
    try:
        with Reader(path) as reader:
            start_ns = reader.start_time if reader.message_count else 0
            data = BagData(path=path, start_ns=start_ns,
                           duration_s=reader.duration * 1e-9 if reader.message_count else 0.0,
                           topics={c.topic: c.msgtype for c in reader.connections})
            conns = [c for c in reader.connections if c.topic in extractors]
            rows: dict[str, tuple[str, list, list, list]] = {}
            lo = None if start is None else start_ns + int(start * 1e9)
            hi = None if end is None else start_ns + int(end * 1e9) + 1
            # (An empty connection list would mean "all of them" to rosbags.)
            for conn, t_ns, raw in reader.messages(conns, start=lo, stop=hi) if conns else ():
                try:
                    message = deserialize(raw, conn.msgtype)
                    values = extractors[conn.topic](message)
                except (SerdeError, AttributeError, KeyError) as err:
                    raise BagError(f'a message on {conn.topic} ({conn.msgtype}) at '
                                   f'{_stamp_s(t_ns, start_ns):.3f} s cannot be decoded: {err}'
                                   ) from None
                t = _stamp_s(t_ns, start_ns)
                header = getattr(message, 'header', None)
                stamp = (header.stamp.sec + header.stamp.nanosec * 1e-9 if header is not None
                         else np.nan)
                for name, value in values.items():
                    entry = rows.setdefault(name, (conn.topic, [], [], []))
                    entry[1].append(t)
                    entry[2].append(value)
                    entry[3].append(stamp)
    except BagError:
        raise
    except MemoryError:  # a damaged length field asked for an impossible allocation
        raise BagError(f'cannot read bag {path}: damaged storage file (a record claims an '
                       'impossible size)') from None
    except Exception as err:  # reader libraries fail in many ways on a damaged file
        detail = f'{type(err).__name__}: {err}' if str(err) else type(err).__name__
        detail = ' '.join(detail.split())  # one line, however the library formats it
        if len(detail) > 300:
            detail = detail[:300] + ' ...'
        raise BagError(f'cannot read bag {path}: {detail}') from None
    for name, (topic, ts, values, stamps) in rows.items():
        data.series[name] = Series(topic, np.asarray(ts, dtype=float), _stack(values),
                                   np.asarray(stamps, dtype=float))
    # One pelvis source: ground truth (simulation) when present, else the state estimate (robot).
    for quantity in ('pelvis_height', 'forward_speed'):
        for prefix in ('gt_', 'est_'):
            if prefix + quantity in data.series:
                data.series.setdefault(quantity, data.series[prefix + quantity])
    torque = data.series.get('motor_torque')
    if torque is not None and len(torque.t) and np.isnan(torque.values).all():
        del data.series['motor_torque']
        data.notes.append(f'{JOINT_STATES} has no effort (motor torque) values')
    return data


def extract_series(path: Path | str, start: float | None = None,
                   end: float | None = None) -> dict[str, Series]:
    """The data each figure plots, by series name (see ``read_bag``)."""
    return read_bag(path, start, end).series


# ----------------------------------------------------------------------------- figures


def _missing_text(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha='center', va='center', fontsize=11,
            color='0.35', multialignment='center')
    ax.set_yticks([])


def _figure(rows: int, cols: int, size, title: str, bag: BagData, **kwargs):
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout='constrained')
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, **kwargs)
    fig.suptitle(f'{title}\n{bag.path.name}', fontsize=13)
    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel(TIME_LABEL)
    return fig, axes


def plot_state(bag: BagData):
    s = bag.series
    if not any(k in s for k in ('pelvis_height', 'forward_speed', 'commanded_speed',
                                'foot_height_left', 'foot_height_right')):
        return None, [f'{GROUND_TRUTH} or {STATE_ESTIMATE}', CMD_VEL]
    missing = []
    fig, axes = _figure(3, 1, (11, 8.5), 'Pelvis and feet', bag)
    ax_h, ax_v, ax_f = axes[:, 0]
    if 'pelvis_height' in s:
        h = s['pelvis_height']
        ax_h.plot(h.t, h.values, color='k', lw=1.2, label=f'pelvis ({h.topic})')
        ax_h.legend(**OUTSIDE)
    else:
        missing.append(f'{GROUND_TRUTH} or {STATE_ESTIMATE}')
        _missing_text(ax_h, f'no pelvis pose recorded\n({GROUND_TRUTH} or {STATE_ESTIMATE})')
    ax_h.set_ylabel('pelvis height (m)')
    ax_h.set_title('pelvis height above the ground plane', fontsize=11)

    if 'forward_speed' in s:
        v = s['forward_speed']
        ax_v.plot(v.t, v.values, color='k', lw=1.2, label=f'measured ({v.topic})')
    if 'commanded_speed' in s:
        c = s['commanded_speed']
        # A command holds until the next one: draw it as a step.
        t = np.append(c.t, max(c.t[-1], bag.duration_s)) if len(c.t) else c.t
        vals = np.append(c.values, c.values[-1]) if len(c.t) else c.values
        ax_v.step(t, vals, where='post', color='tab:orange', lw=1.5, ls='--',
                  label=f'commanded ({c.topic})')
    else:
        missing.append(CMD_VEL)
    if 'forward_speed' in s or 'commanded_speed' in s:
        note = '' if 'commanded_speed' in s else f'  [no {CMD_VEL} recorded]'
        ax_v.legend(**OUTSIDE, title=note.strip() or None, title_fontsize=9)
    else:
        _missing_text(ax_v, 'no pelvis twist or speed command recorded\n'
                            f'({GROUND_TRUTH}, {STATE_ESTIMATE}, {CMD_VEL})')
    ax_v.set_ylabel('forward speed (m/s)')
    ax_v.set_title('forward speed (pelvis frame x)', fontsize=11)

    feet = [side for side in SIDES if f'foot_height_{side}' in s]
    for side in feet:
        f = s[f'foot_height_{side}']
        ax_f.plot(f.t, f.values, color=SIDE_COLORS[side], lw=1.2, label=f'{side} foot')
    if feet:
        ax_f.legend(**OUTSIDE)
    else:
        missing.append(' / '.join(FOOT_POSITIONS.values()))
        _missing_text(ax_f, 'no foot position topic recorded\n(foot height needs '
                            f'{FOOT_POSITIONS["left"]} and {FOOT_POSITIONS["right"]},\n'
                            'geometry_msgs/PointStamped in the world frame)')
    ax_f.set_ylabel('foot height (m)')
    ax_f.set_title('foot height', fontsize=11)
    return fig, missing


def _motor_grid(bag: BagData, title: str, ylabel: str):
    fig, axes = _figure(2, 5, (17, 7), title, bag, sharey='col')
    for r, side in enumerate(SIDES):
        for c, motor in enumerate(LEG_MOTORS):
            axes[r, c].set_title(f'{side} {MOTOR_LABELS[motor]}', fontsize=11)
        axes[r, 0].set_ylabel(ylabel)
    return fig, axes


def plot_motor_torques(bag: BagData):
    tau = bag.series.get('motor_torque')
    if tau is None:
        return None, [f'{JOINT_STATES} (effort)']
    fig, axes = _motor_grid(bag, f'Motor torques ({tau.topic} effort)', 'torque (N·m)')
    for k, ax in enumerate(axes.flat):
        side = SIDES[k // len(LEG_MOTORS)]
        ax.plot(tau.t, tau.values[:, k], color=SIDE_COLORS[side], lw=1.0)
        ax.axhline(0.0, color='0.6', lw=0.6)
    return fig, []


def plot_ground_reaction_forces(bag: BagData):
    present = [side for side in SIDES if f'foot_force_{side}' in bag.series]
    missing = [FOOT_FORCES[side] for side in SIDES if side not in present]
    if not present:
        return None, missing
    fig, axes = _figure(2, 1, (11, 7), 'Ground reaction forces (world axes)', bag, sharey=True)
    for ax, side in zip(axes[:, 0], SIDES):
        ax.set_title(f'{side} foot', fontsize=11)
        ax.set_ylabel('force (N)')
        if side not in present:
            _missing_text(ax, f'{FOOT_FORCES[side]} not recorded')
            continue
        f = bag.series[f'foot_force_{side}']
        for i, axis in enumerate('xyz'):
            ax.plot(f.t, f.values[:, i], color=AXIS_COLORS[axis], lw=1.3 if axis == 'z' else 1.0,
                    label=f'F{axis}' + (' (vertical)' if axis == 'z' else ''))
        ax.axhline(0.0, color='0.6', lw=0.6)
        ax.legend(**OUTSIDE)
    return fig, missing


def plot_pd_targets(bag: BagData):
    target = bag.series.get('pd_target_position')
    measured = bag.series.get('motor_position')
    missing = ([] if target is not None else [PD_TARGETS]) + (
        [] if measured is not None else [JOINT_STATES])
    if target is None and measured is None:
        return None, missing
    fig, axes = _motor_grid(bag, 'PD position targets and measured motor positions',
                            'position (rad)')
    for k, ax in enumerate(axes.flat):
        # The target (held until the next one: a step) underneath, the measurement on top.
        if target is not None:
            ax.step(target.t, target.values[:, k], where='post', color='tab:orange', lw=2.0,
                    alpha=0.8, label=f'target ({PD_TARGETS})')
        if measured is not None:
            ax.plot(measured.t, measured.values[:, k], color='k', lw=0.9,
                    label=f'measured ({JOINT_STATES})')
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for topic in missing:
        labels.append(f'{topic} not recorded')
        handles.append(axes[0, 0].plot([], [], ls='none')[0])
    fig.legend(handles, labels, loc='upper right', fontsize=10)
    return fig, missing


def plot_policy_actions(bag: BagData):
    a = bag.series.get('policy_action')
    if a is None:
        return None, [POLICY_ACTION]
    width = a.values.shape[1]
    if width == len(MOTOR_NAMES):
        fig, axes = _motor_grid(bag, f'Raw policy actions ({a.topic})', 'action (raw output)')
        for k, ax in enumerate(axes.flat):
            side = SIDES[k // len(LEG_MOTORS)]
            ax.step(a.t, a.values[:, k], where='post', color=SIDE_COLORS[side], lw=1.0)
            ax.axhline(0.0, color='0.6', lw=0.6)
    else:
        fig, axes = _figure(1, 1, (12, 5), f'Raw policy actions ({a.topic}, {width} values)',
                            bag)
        ax = axes[0, 0]
        for k in range(width):
            ax.step(a.t, a.values[:, k], where='post', lw=1.0, label=f'action[{k}]')
        ax.set_ylabel('action (raw output)')
        ax.legend(loc='upper right', fontsize=8, ncols=min(width, 5))
    return fig, []


PLOTTERS = {
    'state': plot_state,
    'motor_torques': plot_motor_torques,
    'ground_reaction_forces': plot_ground_reaction_forces,
    'pd_targets': plot_pd_targets,
    'policy_actions': plot_policy_actions,
}


def make_plots(bag: BagData, out_dir: Path, fmt: str = 'png',
               log=print) -> dict[str, Path]:
    """Write each figure that has data; returns plot name -> file. Missing topics are logged."""
    written = {}
    for name in PLOTS:
        fig, missing = PLOTTERS[name](bag)
        if fig is None:
            log(f'{name}: not plotted, missing from the bag: {", ".join(missing)}')
            continue
        if missing:
            log(f'{name}: plotted without {", ".join(missing)} (not in the bag)')
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f'{name}.{fmt}'
        fig.savefig(path, dpi=110)
        written[name] = path
    return written


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog='plot_bag',
        description='Make the rollout plots (state, motor torques, ground reaction forces, '
        'PD targets, policy actions) from a rosbag2 recording.')
    parser.add_argument('bag', type=Path, help='bag directory (or a .mcap / .db3 file)')
    parser.add_argument('--out', type=Path, default=None,
                        help='folder for the figures (default: <bag>_plots next to the bag)')
    parser.add_argument('--format', choices=('png', 'pdf'), default='png')
    parser.add_argument('--start', type=float, default=None, metavar='S',
                        help='first time plotted, s since the start of the recording')
    parser.add_argument('--end', type=float, default=None, metavar='S',
                        help='last time plotted, s since the start of the recording')
    args = parser.parse_args(argv)
    if args.start is not None and args.end is not None and args.end <= args.start:
        parser.error('--end must be after --start')

    def log(text: str) -> None:
        print(f'plot_bag: {text}', file=sys.stderr, flush=True)

    try:
        bag = read_bag(args.bag, args.start, args.end)
    except BagError as err:
        log(f'error: {err}')
        return 1
    for note in bag.notes:
        log(f'note: {note}')
    bag_path = args.bag.resolve()
    name = bag_path.stem if bag_path.is_file() else bag_path.name
    out = args.out or bag_path.parent / f'{name}_plots'
    import matplotlib

    matplotlib.use('Agg')
    written = make_plots(bag, out, args.format, log=log)
    if not written:
        log(f'error: nothing to plot in {args.bag}; its topics: '
            f'{", ".join(sorted(bag.topics)) or "none"}')
        return 1
    for path in written.values():
        print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
