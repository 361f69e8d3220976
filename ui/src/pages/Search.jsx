// The Search page: a query over the chosen collections in hybrid, text or vector mode, with
// each hit's document, pages, highlighted snippet and a link that opens the document.
import { useState } from "preact/hooks";
import { call, openDocument } from "../api.js";
import { CollectionPicker } from "../components/CollectionPicker.jsx";
import { ErrorNote } from "../components/ErrorNote.jsx";
import { Highlighted } from "../components/Highlighted.jsx";
import { useAction } from "../components/hooks.js";
import { num } from "../format.js";

const MODES = [
  ["hybrid", "Hybrid"],
  ["text", "Text"],
  ["vector", "Vector"],
];

function Hit({ hit }) {
  const [open, , error] = useAction(() => openDocument(hit.document, hit.page_start));
  const page =
    hit.page_start == null
      ? ""
      : hit.page_end != null && hit.page_end !== hit.page_start
        ? `pp. ${hit.page_start}–${hit.page_end}`
        : `p. ${hit.page_start}`;
  return (
    <li class="hit card" data-test={`hit-${hit.rank}`}>
      <div class="row spread">
        <h2>
          <button type="button" class="link" onClick={() => open()} data-test="hit-open">
            {hit.title || hit.filename}
          </button>
        </h2>
        <span class="muted small">score {num(hit.score, 4)}</span>
      </div>
      <p class="muted small">
        {hit.collection} · {hit.filename}
        {page && ` · ${page}`}
        {hit.chunk && hit.chunk.heading && ` · ${hit.chunk.heading}`}
      </p>
      <Highlighted text={hit.snippet.text} highlights={hit.snippet.highlights} />
      <ErrorNote error={error} />
    </li>
  );
}

export function Search() {
  const [query, setQuery] = useState("");
  const [mode, setMode] = useState("hybrid");
  const [collections, setCollections] = useState([]);
  const [results, setResults] = useState(null);
  const [search, busy, error] = useAction(async () => {
    const body = { query, mode, top_k: 20 };
    if (collections.length) body.collections = collections;
    setResults(await call("POST", "/api/v1/search", body));
  });
  const submit = (e) => {
    e.preventDefault();
    if (query.trim()) search();
  };
  return (
    <section aria-labelledby="search-title">
      <h1 id="search-title">Search</h1>
      <form class="card search-form" onSubmit={submit}>
        <label for="search-query">Query</label>
        <div class="row">
          <input
            id="search-query"
            type="search"
            value={query}
            onInput={(e) => setQuery(e.currentTarget.value)}
            data-test="search-query"
          />
          <button type="submit" class="primary" disabled={busy || !query.trim()} data-test="search-submit">
            {busy ? "Searching…" : "Search"}
          </button>
        </div>
        <fieldset class="segmented" data-test="search-mode">
          <legend>Mode</legend>
          {MODES.map(([value, label]) => (
            <label key={value} for={`mode-${value}`} class={mode === value ? "on" : ""}>
              <input
                type="radio"
                name="mode"
                id={`mode-${value}`}
                value={value}
                checked={mode === value}
                onChange={() => setMode(value)}
                data-test={`search-mode-${value}`}
              />
              {label}
            </label>
          ))}
        </fieldset>
        <CollectionPicker selected={collections} onChange={setCollections} idPrefix="search" />
      </form>
      <ErrorNote error={error} test="search-error" />
      {results && (
        <div aria-live="polite">
          <p class="muted small" data-test="search-summary">
            {results.hits.length} hits · {results.mode} · {num(results.took_ms, 1)} ms
          </p>
          <ol class="hits" data-test="search-hits">
            {results.hits.map((h) => (
              <Hit key={`${h.collection}-${h.chunk.id}`} hit={h} />
            ))}
          </ol>
        </div>
      )}
    </section>
  );
}
