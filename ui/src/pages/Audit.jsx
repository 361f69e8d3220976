// The audit log page (admins): newest first, filtered by actor, action and outcome, paged
// with `before_id`.
import { useState } from "preact/hooks";
import { ErrorNote } from "../components/ErrorNote.jsx";
import { useLoad } from "../components/hooks.js";
import { when } from "../format.js";

const PAGE = 50;

export function Audit() {
  const [filters, setFilters] = useState({ actor: "", action: "", outcome: "" });
  const [draft, setDraft] = useState(filters);
  // Each page starts below the last id of the page before; the stack allows going back.
  const [pages, setPages] = useState([null]);
  const before = pages[pages.length - 1];
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (before != null) params.set("before_id", String(before));
  for (const [k, v] of Object.entries(filters)) if (v) params.set(k, v);
  const { data, error, loading } = useLoad(`/api/v1/audit?${params}`);
  const apply = (e) => {
    e.preventDefault();
    setFilters(draft);
    setPages([null]);
  };
  const field = (key, label) => (
    <div>
      <label for={`audit-${key}`}>{label}</label>
      <input id={`audit-${key}`} value={draft[key]} onInput={(e) => setDraft({ ...draft, [key]: e.currentTarget.value })} data-test={`audit-${key}`} />
    </div>
  );
  return (
    <section aria-labelledby="audit-title">
      <h1 id="audit-title">Audit log</h1>
      <form class="card filters" onSubmit={apply} data-test="audit-filters">
        {field("actor", "Actor")}
        {field("action", "Action")}
        <div>
          <label for="audit-outcome">Outcome</label>
          <select id="audit-outcome" value={draft.outcome} onChange={(e) => setDraft({ ...draft, outcome: e.currentTarget.value })} data-test="audit-outcome">
            <option value="">any</option>
            <option value="allowed">allowed</option>
            <option value="denied">denied</option>
            <option value="failed">failed</option>
          </select>
        </div>
        <button type="submit" class="primary" data-test="audit-apply">
          Filter
        </button>
      </form>
      <ErrorNote error={error} />
      {data && (
        <div class="table-wrap card">
          <table data-test="audit-table">
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Actor</th>
                <th scope="col">Action</th>
                <th scope="col">Target</th>
                <th scope="col">Outcome</th>
                <th scope="col">Source</th>
                <th scope="col">Detail</th>
              </tr>
            </thead>
            <tbody>
              {data.map((e) => (
                <tr key={e.id}>
                  <td class="nowrap">{when(e.at)}</td>
                  <td>{e.actor || "–"}</td>
                  <td>
                    <code>{e.action}</code>
                  </td>
                  <td>{e.target || "–"}</td>
                  <td>
                    <span class={`badge ${e.outcome === "allowed" ? "indexed" : "failed"}`}>{e.outcome}</span>
                  </td>
                  <td>{e.source || "–"}</td>
                  <td class="detail">{e.detail || ""}</td>
                </tr>
              ))}
              {data.length === 0 && (
                <tr>
                  <td colSpan={7} class="muted">
                    No entries.
                  </td>
                </tr>
              )}
            </tbody>
          </table>
          <div class="row">
            <button type="button" disabled={pages.length === 1 || loading} onClick={() => setPages(pages.slice(0, -1))} data-test="audit-newer">
              Newer
            </button>
            <button
              type="button"
              disabled={data.length < PAGE || loading}
              onClick={() => setPages([...pages, data[data.length - 1].id])}
              data-test="audit-older"
            >
              Older
            </button>
            <span class="muted small">Page {pages.length}</span>
          </div>
        </div>
      )}
    </section>
  );
}
