// The System page (admins): daemon version, uptime, readiness and the data directory's free
// disk; the ingestion queue; GPUs
// with live charts of the last hour, health and XIDs (or the CPU-only notice); host
// services; volumes with their lock state; backups with "Back up now"; and the Prometheus
// metrics.
import { useState } from "preact/hooks";
import { call, get, openFetched, seg } from "../api.js";
import { ErrorNote } from "../components/ErrorNote.jsx";
import { LineChart } from "../components/LineChart.jsx";
import { useAction, useLoad, usePoll } from "../components/hooks.js";
import { bytes, duration, millis, num, when } from "../format.js";

const HOUR_MS = 3600 * 1000;
const RECENT_S = 120;

function Status() {
  const { data, error, reload } = useLoad("/api/v1/status");
  usePoll(reload, 10000);
  const [metrics, , metricsError] = useAction(() => openFetched("/metrics"));
  return (
    <section class="card" aria-labelledby="daemon-title">
      <h2 id="daemon-title">Daemon</h2>
      <ErrorNote error={error} />
      {data && (
        <>
          <dl class="facts" data-test="daemon-facts">
            <div>
              <dt>Version</dt>
              <dd data-test="daemon-version">{data.version}</dd>
            </div>
            <div>
              <dt>Uptime</dt>
              <dd>{duration(data.uptime_seconds)}</dd>
            </div>
            <div>
              <dt>Ready</dt>
              <dd>
                <span class={`badge ${data.ready ? "indexed" : "failed"}`}>{data.ready ? "ready" : "not ready"}</span>
              </dd>
            </div>
            <div>
              <dt>Address</dt>
              <dd>{data.bind}</dd>
            </div>
            <div>
              <dt>PID</dt>
              <dd>{data.pid}</dd>
            </div>
            {data.disk && (
              <div>
                <dt>Disk free</dt>
                <dd data-test="disk-free" title={data.disk.path}>
                  {bytes(data.disk.available_bytes)} of {bytes(data.disk.total_bytes)}
                </dd>
              </div>
            )}
          </dl>
          {data.tls && (
            <p class="small">
              {data.tls.version}, certificate SHA-256 <code class="wrap">{data.tls.sha256_fingerprint}</code>
            </p>
          )}
          <ul class="checks" data-test="readiness-checks">
            {data.checks.map((c) => (
              <li key={c.name}>
                <span class={`badge ${c.ok ? "indexed" : "failed"}`}>{c.ok ? "ok" : "failing"}</span> <strong>{c.name}</strong>{" "}
                <span class="muted small">{c.detail}</span>
              </li>
            ))}
          </ul>
        </>
      )}
      <button type="button" class="link" onClick={() => metrics()} data-test="open-metrics">
        Open the Prometheus metrics (/metrics)
      </button>
      <ErrorNote error={metricsError} />
    </section>
  );
}

function Queue() {
  const { data, error, reload } = useLoad("/api/v1/collections");
  usePoll(reload, 5000);
  const sum = {};
  for (const c of data || []) for (const [k, v] of Object.entries(c.counts.by_status || {})) sum[k] = (sum[k] || 0) + v;
  return (
    <section class="card" aria-labelledby="queue-title">
      <h2 id="queue-title">Ingestion queue</h2>
      <ErrorNote error={error} />
      {data && (
        <dl class="facts" data-test="ingestion-queue">
          {["queued", "extracting", "embedding", "indexed", "failed"].map((s) => (
            <div key={s}>
              <dt>{s}</dt>
              <dd>{sum[s] || 0}</dd>
            </div>
          ))}
          <div>
            <dt>Stored</dt>
            <dd>{bytes((data || []).reduce((a, c) => a + c.counts.bytes, 0))}</dd>
          </div>
        </dl>
      )}
    </section>
  );
}

// The last hour: one averaged point per minute, then every sample of the last minutes.
async function history(uuid) {
  const base = `/api/v1/gpus/${seg(uuid)}/history`;
  const [minutes, samples] = await Promise.all([
    get(`${base}?resolution=minutes&seconds=3600`),
    get(`${base}?resolution=samples&seconds=${RECENT_S}`),
  ]);
  const first = samples.points.length ? samples.points[0].at_ms : Infinity;
  return [...minutes.points.filter((p) => p.at_ms < first), ...samples.points];
}

function Gpu({ gpu }) {
  const { data, error, reload } = useLoad(() => history(gpu.uuid), [gpu.uuid]);
  usePoll(reload, 5000);
  const to = Date.now();
  const from = to - HOUR_MS;
  const series = (f) => (data || []).map((p) => ({ t: p.at_ms, v: p[f] }));
  const s = gpu.sample || {};
  const health = gpu.health || {};
  const xids = Object.entries((gpu.xids && gpu.xids.counts) || {});
  return (
    <article class="card gpu" data-test={`gpu-${gpu.index}`}>
      <div class="row spread">
        <h3>
          GPU {gpu.index}: {gpu.name}
        </h3>
        <span class={`badge ${health.health === "healthy" ? "indexed" : health.health === "degraded" ? "embedding" : "failed"}`} data-test="gpu-health">
          {health.health || "unknown"}
        </span>
      </div>
      <p class="muted small">
        {gpu.uuid} · PCI {gpu.pci_bus_id} · {bytes(gpu.memory_total_bytes)}
        {gpu.compute_capability && ` · compute ${gpu.compute_capability}`}
      </p>
      {health.reasons && health.reasons.length > 0 && (
        <ul class="error small">
          {health.reasons.map((r) => (
            <li key={r}>{r}</li>
          ))}
        </ul>
      )}
      <dl class="facts">
        <div>
          <dt>Utilisation</dt>
          <dd>{s.gpu_util_pct == null ? "–" : `${s.gpu_util_pct} %`}</dd>
        </div>
        <div>
          <dt>Memory</dt>
          <dd>
            {s.fb_used_bytes == null ? "–" : `${bytes(s.fb_used_bytes)} / ${bytes(gpu.memory_total_bytes)}`}
          </dd>
        </div>
        <div>
          <dt>Temperature</dt>
          <dd>{s.gpu_temp_c == null ? "–" : `${s.gpu_temp_c} °C`}</dd>
        </div>
        <div>
          <dt>Power</dt>
          <dd>
            {s.power_watts == null ? "–" : `${num(s.power_watts, 0)} W`}
            {gpu.power_limit_watts ? ` / ${num(gpu.power_limit_watts, 0)} W` : ""}
          </dd>
        </div>
        <div>
          <dt>XIDs</dt>
          <dd data-test="gpu-xids">{xids.length ? xids.map(([x, n]) => `${x}×${n}`).join(", ") : "none"}</dd>
        </div>
      </dl>
      {gpu.xids && gpu.xids.last && (
        <p class="small">
          Last XID {gpu.xids.last.xid} at {when(gpu.xids.last.at_ms)}
        </p>
      )}
      {gpu.instances && gpu.instances.length > 0 && (
        <p class="small">Runs: {gpu.instances.map((i) => `${i.model} v${i.version} ×${i.instances}`).join(", ")}</p>
      )}
      <ErrorNote error={error} />
      <div class="charts">
        <LineChart title="Utilisation" unit="%" max={100} points={series("gpu_util_pct")} from={from} to={to} test="chart-util" />
        <LineChart
          title="Memory used"
          unit="GiB"
          max={gpu.memory_total_bytes / 2 ** 30}
          format={(v) => num(v, 1)}
          points={series("fb_used_bytes").map((p) => ({ t: p.t, v: p.v == null ? null : p.v / 2 ** 30 }))}
          from={from}
          to={to}
          test="chart-memory"
        />
        <LineChart title="Temperature" unit="°C" points={series("gpu_temp_c")} from={from} to={to} test="chart-temperature" />
        <LineChart
          title="Power"
          unit="W"
          max={gpu.power_limit_watts || undefined}
          points={series("power_watts")}
          from={from}
          to={to}
          test="chart-power"
        />
      </div>
    </article>
  );
}

function HealthHistory() {
  const { data, error } = useLoad("/api/v1/audit?action=gpu.health&limit=20");
  if (!data && !error) return null;
  return (
    <div>
      <h3>Health changes</h3>
      <ErrorNote error={error} />
      {data && data.length === 0 && <p class="muted small">No health changes recorded.</p>}
      {data && data.length > 0 && (
        <ul class="small" data-test="gpu-health-history">
          {data.map((e) => (
            <li key={e.id}>
              {when(e.at)} · {e.target} · {e.detail}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

function Gpus() {
  const { data, error, reload } = useLoad("/api/v1/gpus");
  usePoll(reload, 5000);
  const cpuOnly = data && (data.nvml.state !== "ok" || data.gpus.length === 0);
  return (
    <section class="card" aria-labelledby="gpus-title">
      <h2 id="gpus-title">GPUs</h2>
      <ErrorNote error={error} />
      {cpuOnly && (
        <p class="notice" data-test="cpu-only">
          CPU-only: {data.nvml.detail || (data.nvml.state === "disabled" ? "GPU supervision is disabled ([gpu] enabled = false)." : "no GPU was found.")}
        </p>
      )}
      {data && data.driver && (
        <p class="muted small">
          Driver {data.driver.driver_version} · CUDA {data.driver.cuda_driver_version} · NVML {data.driver.nvml_version}
        </p>
      )}
      {data && data.gpus.map((g) => <Gpu key={g.uuid} gpu={g} />)}
      {data && data.cpu_instances && data.cpu_instances.length > 0 && (
        <p class="small">On the CPU: {data.cpu_instances.map((i) => `${i.model} v${i.version} ×${i.instances}`).join(", ")}</p>
      )}
      {data && data.host_services && data.host_services.units.length > 0 && (
        <div>
          <h3>Host services</h3>
          <ul class="small" data-test="host-services">
            {data.host_services.units.map((u) => (
              <li key={u.unit}>
                <strong>{u.unit}</strong>: {u.state} {u.sub_state ? `(${u.sub_state})` : ""}
              </li>
            ))}
          </ul>
        </div>
      )}
      {data && !cpuOnly && <HealthHistory />}
    </section>
  );
}

function VolumeRow({ v, onChanged }) {
  const [passphrase, setPassphrase] = useState("");
  const [unlock, busy, error] = useAction(async () => {
    await call("POST", `/api/v1/volumes/${seg(v.name)}/unlock`, passphrase ? { passphrase } : {});
    setPassphrase("");
    onChanged();
  });
  return (
    <tr data-test={`volume-row-${v.name}`}>
      <th scope="row">
        {v.name}
        {v.data && <span class="muted small"> (data)</span>}
      </th>
      <td>{v.device}</td>
      <td>
        <span class={`badge ${v.unlocked ? "indexed" : "failed"}`} data-test="volume-state">
          {v.unlocked ? "unlocked" : "locked"}
        </span>
        {!v.present && <div class="error small">device missing</div>}
      </td>
      <td>{v.mounted_at || "–"}</td>
      <td>{v.key_slots ? v.key_slots.join(", ") : "–"}</td>
      <td>
        {[v.key_file && "key file", v.tpm2_enrolled && "TPM2"].filter(Boolean).join(", ") || "passphrase"}
      </td>
      <td>
        {!v.unlocked && (
          <form
            class="row nowrap"
            onSubmit={(e) => {
              e.preventDefault();
              unlock();
            }}
          >
            <input
              type="password"
              aria-label={`Passphrase of ${v.name}`}
              placeholder="Passphrase"
              value={passphrase}
              onInput={(e) => setPassphrase(e.currentTarget.value)}
              data-test="volume-passphrase"
            />
            <button type="submit" disabled={busy} data-test="volume-unlock">
              Unlock
            </button>
          </form>
        )}
        <ErrorNote error={error} />
      </td>
    </tr>
  );
}

function Volumes() {
  const { data, error, reload } = useLoad("/api/v1/volumes");
  return (
    <section class="card" aria-labelledby="volumes-title">
      <h2 id="volumes-title">Volumes</h2>
      <ErrorNote error={error} />
      {data && data.volumes.length === 0 && (
        <p class="muted" data-test="no-volumes">
          No encrypted volumes: the data lives in the data directory as it is.
        </p>
      )}
      {data && data.volumes.length > 0 && (
        <div class="table-wrap">
          <table data-test="volumes-table">
            <thead>
              <tr>
                <th scope="col">Volume</th>
                <th scope="col">Device</th>
                <th scope="col">State</th>
                <th scope="col">Mounted at</th>
                <th scope="col">Key slots</th>
                <th scope="col">Unattended unlock</th>
                <th scope="col">
                  <span class="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {data.volumes.map((v) => (
                <VolumeRow key={v.name} v={v} onChanged={reload} />
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

// What "Back up now" says in the live region: the work in progress, or what was made.
function BackupOutcome({ busy, running, created }) {
  if (busy) return <p class="muted">Backing up… a large knowledge base takes a while.</p>;
  if (running) return <p class="muted">A backup is running (started elsewhere, e.g. by the timer)…</p>;
  if (!created) return null;
  const facts = [
    bytes(created.size_bytes),
    `in ${millis(created.duration_ms)}`,
    created.documents != null && `${created.documents} documents`,
    created.chunks != null && `${created.chunks} chunks`,
    created.encrypted ? "encrypted" : "not encrypted",
    created.secrets_included && "secrets included",
    created.indexes === "rebuild" ? "indexes rebuilt at restore" : "indexes included",
  ].filter(Boolean);
  const pruned = created.pruned || [];
  return (
    <>
      <p>
        Backed up: <code class="wrap">{created.name}</code> ({facts.join(", ")}).
      </p>
      <p class="muted small detail">{created.location}</p>
      {pruned.length > 0 && <p class="muted small">Removed by the retention rules: {pruned.join(", ")}</p>}
    </>
  );
}

function Backups() {
  const { data, error, reload } = useLoad("/api/v1/backups");
  const [created, setCreated] = useState(null);
  const [backUp, busy, backUpError] = useAction(async () => {
    setCreated(null);
    try {
      setCreated(await call("POST", "/api/v1/backups"));
    } finally {
      reload();
    }
  });
  const running = Boolean(data && data.running);
  usePoll(reload, busy || running ? 2000 : 15000);
  const ok = data && data.last_success;
  const failed = data && data.last_failure;
  // A failure older than the last success is history, not an alarm.
  const recovered = failed && ok && new Date(ok.at) > new Date(failed.at);
  return (
    <section class="card" aria-labelledby="backups-title" aria-busy={busy || running ? "true" : "false"} data-test="backups">
      <div class="row spread">
        <h2 id="backups-title">Backups</h2>
        <button type="button" class="primary" disabled={busy || running} onClick={() => backUp()} data-test="backup-now">
          {busy || running ? "Backing up…" : "Back up now"}
        </button>
      </div>
      <div aria-live="polite" class="backup-outcome" data-test="backup-result">
        <BackupOutcome busy={busy} running={running} created={created} />
      </div>
      <ErrorNote error={backUpError} test="backup-error" />
      <ErrorNote error={error} />
      {data && !data.target && (
        <p class="notice" data-test="no-backup-target">
          No backup target configured — set <code>[backup] target</code> in <code>/etc/sparkbrain/config.toml</code> and
          enable <code>sparkbrain-backup.timer</code>.
        </p>
      )}
      {data && (
        <dl class="facts">
          {data.target && (
            <div>
              <dt>Target</dt>
              <dd data-test="backup-target">
                <code class="wrap">{data.target}</code>
              </dd>
            </div>
          )}
          <div>
            <dt>Archives</dt>
            <dd data-test="backup-encrypted">
              <span class={`badge ${data.encrypted ? "indexed" : "embedding"}`}>{data.encrypted ? "encrypted" : "not encrypted"}</span>
            </dd>
          </div>
          <div>
            <dt>Last success</dt>
            <dd data-test="backup-last-success">
              {ok ? (
                <span title={ok.name}>
                  {[when(ok.at), bytes(ok.size_bytes), ok.duration_ms != null && millis(ok.duration_ms)].filter(Boolean).join(" · ")}
                </span>
              ) : (
                "never"
              )}
            </dd>
          </div>
          <div>
            <dt>Failures</dt>
            <dd data-test="backup-failures">{data.failures_total}</dd>
          </div>
        </dl>
      )}
      {failed && (
        <p class={recovered ? "muted small" : "error small"} data-test="backup-last-failure">
          Last failure {when(failed.at)}: {failed.error}
        </p>
      )}
      {data && data.list_error && (
        <p class="error small" data-test="backup-list-error">
          Cannot list the target: {data.list_error}
        </p>
      )}
      {data && data.target && !data.list_error && data.backups.length === 0 && (
        <p class="muted" data-test="no-backups">
          No archives in the target yet.
        </p>
      )}
      {data && data.backups.length > 0 && (
        <div class="table-wrap">
          <table data-test="backups-table">
            <caption class="visually-hidden">Archives in the backup target, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Archive</th>
                <th scope="col" class="num">
                  Size
                </th>
                <th scope="col">Created</th>
              </tr>
            </thead>
            <tbody>
              {data.backups.map((b) => (
                <tr key={b.name} data-test={`backup-row-${b.name}`}>
                  <th scope="row" title={b.location}>
                    {b.name}
                  </th>
                  <td class="num">{bytes(b.size_bytes)}</td>
                  <td>{when(b.created_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

export function System() {
  return (
    <section aria-labelledby="system-title">
      <h1 id="system-title">System</h1>
      <div class="grid2">
        <Status />
        <div>
          <Queue />
          <Volumes />
        </div>
      </div>
      <Backups />
      <Gpus />
    </section>
  );
}
