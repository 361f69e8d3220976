// The Models page: the model repository and the served models with their versions, state,
// execution provider in use, request rate and latency (from the statistics extension,
// polled), load/unload for admins, and the configured language models.
import { useEffect, useRef, useState } from "preact/hooks";
import { call, get, seg } from "../api.js";
import { ErrorNote } from "../components/ErrorNote.jsx";
import { useAction, useLoad, usePoll } from "../components/hooks.js";
import { num } from "../format.js";

const POLL_MS = 5000;

// What is known of one model: repository row, metadata, configuration and statistics.
async function describe(name, row) {
  const m = `/v2/models/${seg(name)}`;
  const [meta, config, stats] = await Promise.allSettled([get(m), get(`${m}/config`), get(`${m}/stats`)]);
  const value = (r) => (r.status === "fulfilled" ? r.value : null);
  return { name, row, meta: value(meta), config: value(config), stats: value(stats), error: meta.status === "rejected" ? meta.reason : null };
}

async function loadModels() {
  const [index, served, generators] = await Promise.all([
    call("POST", "/v2/repository/index", {}),
    get("/v1/models"),
    get("/api/v1/generators").catch(() => []),
  ]);
  const generatorNames = new Set(generators.map((g) => g.name));
  const rows = new Map();
  for (const r of index) if (!rows.has(r.name)) rows.set(r.name, r);
  const names = [...rows.keys()];
  for (const m of served.data || []) if (!rows.has(m.id) && !generatorNames.has(m.id)) names.push(m.id);
  const models = await Promise.all(names.map((n) => describe(n, rows.get(n) || null)));
  return { models, generators, at: Date.now() };
}

function totals(stats) {
  const all = (stats && stats.model_stats) || [];
  const sum = (f) => all.reduce((a, s) => a + f(s), 0);
  const success = sum((s) => s.inference_stats.success.count);
  return {
    inferences: sum((s) => s.inference_count),
    success,
    failures: sum((s) => s.inference_stats.fail.count),
    latencyMs: success ? sum((s) => s.inference_stats.success.ns) / success / 1e6 : null,
    queueMs: success ? sum((s) => s.inference_stats.queue.ns) / success / 1e6 : null,
  };
}

function ModelRow({ model, rate, admin, onChanged }) {
  const t = totals(model.stats);
  const state = model.row ? model.row.state || "not loaded" : "READY (built in)";
  const [change, busy, error] = useAction(async (action) => {
    await call("POST", `/v2/repository/models/${seg(model.name)}/${action}`, {});
    onChanged();
  });
  return (
    <tr data-test={`model-row-${model.name}`}>
      <th scope="row">{model.name}</th>
      <td>{model.meta ? model.meta.versions.join(", ") || "–" : (model.row && model.row.version) || "–"}</td>
      <td>
        <span class={`badge ${/READY/.test(state) ? "indexed" : "failed"}`}>{state}</span>
        {model.row && model.row.reason && <div class="error small">{model.row.reason}</div>}
      </td>
      <td>{model.meta ? model.meta.platform : "–"}</td>
      <td data-test="model-provider">{model.config ? model.config.execution_provider : "–"}</td>
      <td class="num">{model.config ? model.config.instance_count : "–"}</td>
      <td class="num">{t.inferences}</td>
      <td class="num">{t.failures}</td>
      <td class="num">{rate == null ? "–" : num(rate, 2)}</td>
      <td class="num">{t.latencyMs == null ? "–" : num(t.latencyMs, 2)}</td>
      <td class="num">{t.queueMs == null ? "–" : num(t.queueMs, 2)}</td>
      {admin && (
        <td>
          {model.row ? (
            <span class="row nowrap">
              <button type="button" disabled={busy} onClick={() => change("load")} data-test={`model-load-${model.name}`}>
                Load
              </button>
              <button type="button" disabled={busy} onClick={() => change("unload")} data-test={`model-unload-${model.name}`}>
                Unload
              </button>
            </span>
          ) : (
            <span class="muted small">always loaded</span>
          )}
          <ErrorNote error={error} test="model-action-error" />
        </td>
      )}
    </tr>
  );
}

export function Models({ user }) {
  const { data, error, reload } = useLoad(loadModels, []);
  const previous = useRef(null);
  const [rates, setRates] = useState({});
  const admin = user.role === "admin";
  usePoll(reload, POLL_MS);
  // Request rates come from the change in counts between two polls.
  useEffect(() => {
    if (!data) return;
    const before = previous.current;
    previous.current = data;
    if (!before) return;
    const seconds = (data.at - before.at) / 1000;
    const next = {};
    for (const m of data.models) {
      const old = before.models.find((x) => x.name === m.name);
      if (old && seconds > 0) next[m.name] = Math.max(0, (totals(m.stats).inferences - totals(old.stats).inferences) / seconds);
    }
    setRates(next);
  }, [data]);
  return (
    <section aria-labelledby="models-title">
      <h1 id="models-title">Models</h1>
      <ErrorNote error={error} />
      {data && (
        <div class="table-wrap card">
          <table data-test="models-table">
            <thead>
              <tr>
                <th scope="col">Model</th>
                <th scope="col">Versions</th>
                <th scope="col">State</th>
                <th scope="col">Platform</th>
                <th scope="col">Execution provider</th>
                <th scope="col" class="num">Instances</th>
                <th scope="col" class="num">Requests</th>
                <th scope="col" class="num">Failed</th>
                <th scope="col" class="num">Req/s</th>
                <th scope="col" class="num">Latency ms</th>
                <th scope="col" class="num">Queue ms</th>
                {admin && <th scope="col">Actions</th>}
              </tr>
            </thead>
            <tbody>
              {data.models.map((m) => (
                <ModelRow key={m.name} model={m} rate={rates[m.name]} admin={admin} onChanged={reload} />
              ))}
              {data.models.length === 0 && (
                <tr>
                  <td colSpan={12} class="muted">
                    No models.
                  </td>
                </tr>
              )}
            </tbody>
          </table>
          <p class="muted small">
            Latency and queue time are averages per successful request since the model was loaded; the request
            rate is measured over the last {POLL_MS / 1000} s.
          </p>
        </div>
      )}
      {data && (
        <section class="card" aria-labelledby="generators-title">
          <h2 id="generators-title">Language models</h2>
          {data.generators.length === 0 ? (
            <p class="muted" data-test="no-generators">
              No language model is configured: answers list the best passages instead.
            </p>
          ) : (
            <div class="table-wrap">
              <table data-test="generators-table">
                <thead>
                  <tr>
                    <th scope="col">Name</th>
                    <th scope="col">Kind</th>
                    <th scope="col">State</th>
                    <th scope="col" class="num">Context</th>
                    <th scope="col">Default</th>
                  </tr>
                </thead>
                <tbody>
                  {data.generators.map((g) => (
                    <tr key={g.name}>
                      <th scope="row">{g.name}</th>
                      <td>{g.kind}</td>
                      <td>
                        <span class={`badge ${g.ready ? "indexed" : "failed"}`}>{g.ready ? "ready" : "not ready"}</span>
                        {g.detail && <div class="muted small">{g.detail}</div>}
                      </td>
                      <td class="num">{g.context_length ?? "–"}</td>
                      <td>{g.default ? "yes" : ""}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </section>
      )}
    </section>
  );
}
