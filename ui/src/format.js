// Formatting of sizes, durations, times and numbers for display.

/** 1536 → "1.5 KiB". */
export function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** 93784 → "1 d 2 h 3 min". */
export function duration(seconds) {
  if (seconds == null) return "–";
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  if (d) return `${d} d ${h} h ${m} min`;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min`;
  return `${Math.floor(seconds)} s`;
}

/** Milliseconds → "850 ms", "2.4 s", "1 min", "1 h 2 min". */
export function millis(ms) {
  if (ms == null) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${num(ms / 1000, 1)} s`;
  return duration(ms / 1000);
}

/** An RFC 3339 string or Unix milliseconds → local date and time. */
export function when(t) {
  if (t == null || t === "") return "–";
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toLocaleString();
}

/** A number with at most `digits` decimals. */
export function num(v, digits = 1) {
  if (v == null || Number.isNaN(v)) return "–";
  return Number(v).toLocaleString(undefined, { maximumFractionDigits: digits });
}
