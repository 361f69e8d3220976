// A line chart drawn by hand as inline SVG: one series over time with labelled axes (time on
// x, the value with its unit on y).

const W = 480;
const H = 170;
const PAD = { left: 48, right: 12, top: 12, bottom: 28 };

function niceMax(v) {
  if (!(v > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= v) return m * step;
  return 10 * step;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/**
 * `points`: `[{t, v}]` (ms, value; v may be null); `from`/`to`: the time window; `max`: a
 * fixed top of the y axis (else fitted to the data); `format`: tick label of a value.
 */
export function LineChart({ title, unit, points, from, to, max, format = (v) => String(Math.round(v)), test }) {
  const known = points.filter((p) => p.v != null);
  const top = max || niceMax(Math.max(0, ...known.map((p) => p.v)));
  const x = (t) => PAD.left + ((t - from) / Math.max(1, to - from)) * (W - PAD.left - PAD.right);
  const y = (v) => PAD.top + (1 - v / top) * (H - PAD.top - PAD.bottom);
  let d = "";
  let pen = false;
  for (const p of points) {
    if (p.v == null || p.t < from) {
      pen = false;
      continue;
    }
    d += `${pen ? "L" : "M"}${x(p.t).toFixed(1)} ${y(Math.min(p.v, top)).toFixed(1)}`;
    pen = true;
  }
  const latest = known.length ? known[known.length - 1].v : null;
  const yTicks = [0, top / 2, top];
  const xTicks = [from, from + (to - from) / 2, to];
  return (
    <figure class="chart" data-test={test}>
      <figcaption>
        {title}
        <span class="muted"> · {latest == null ? "no data" : `${format(latest)} ${unit}`}</span>
      </figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`${title} (${unit}) over the last hour; latest ${latest == null ? "unknown" : `${format(latest)} ${unit}`}`}>
        {yTicks.map((v) => (
          <g key={`y${v}`}>
            <line class="grid" x1={PAD.left} x2={W - PAD.right} y1={y(v)} y2={y(v)} />
            <text class="tick" x={PAD.left - 6} y={y(v) + 4} text-anchor="end">
              {format(v)}
            </text>
          </g>
        ))}
        {xTicks.map((t, i) => (
          <text key={`x${i}`} class="tick" x={x(t)} y={H - 8} text-anchor={i === 0 ? "start" : i === 2 ? "end" : "middle"}>
            {clock(t)}
          </text>
        ))}
        <text class="axis-label" x={12} y={PAD.top + (H - PAD.top - PAD.bottom) / 2} transform={`rotate(-90 12 ${PAD.top + (H - PAD.top - PAD.bottom) / 2})`} text-anchor="middle">
          {unit}
        </text>
        <line class="axis" x1={PAD.left} x2={PAD.left} y1={PAD.top} y2={H - PAD.bottom} />
        <line class="axis" x1={PAD.left} x2={W - PAD.right} y1={H - PAD.bottom} y2={H - PAD.bottom} />
        {d && <path class="series" d={d} />}
      </svg>
    </figure>
  );
}
