// The Collections page: the collections the user may read with their counts and sizes, and a
// form to create one (editors and admins).
import { useState } from "preact/hooks";
import { call } from "../api.js";
import { ErrorNote } from "../components/ErrorNote.jsx";
import { useAction, useLoad } from "../components/hooks.js";
import { bytes, when } from "../format.js";

const LANGUAGES = [
  ["", "Server default"],
  ["none", "None (no stemming)"],
  ["ar", "Arabic"],
  ["da", "Danish"],
  ["de", "German"],
  ["el", "Greek"],
  ["en", "English"],
  ["es", "Spanish"],
  ["fi", "Finnish"],
  ["fr", "French"],
  ["hu", "Hungarian"],
  ["it", "Italian"],
  ["nl", "Dutch"],
  ["no", "Norwegian"],
  ["pt", "Portuguese"],
  ["ro", "Romanian"],
  ["ru", "Russian"],
  ["sv", "Swedish"],
  ["ta", "Tamil"],
  ["tr", "Turkish"],
];

function pending(c) {
  const s = c.counts.by_status || {};
  return (s.queued || 0) + (s.extracting || 0) + (s.embedding || 0);
}

function CreateForm({ onCreated }) {
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [language, setLanguage] = useState("");
  const [create, busy, error] = useAction(async () => {
    const body = { name, description };
    if (language) body.language = language;
    await call("POST", "/api/v1/collections", body);
    setName("");
    setDescription("");
    onCreated(name);
  });
  return (
    <form
      class="card"
      onSubmit={(e) => {
        e.preventDefault();
        create();
      }}
      data-test="create-collection-form"
    >
      <h2>New collection</h2>
      <div class="grid3">
        <div>
          <label for="new-collection-name">Name</label>
          <input
            id="new-collection-name"
            required
            pattern="[A-Za-z0-9][A-Za-z0-9._\-]{0,63}"
            title="1–64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            value={name}
            onInput={(e) => setName(e.currentTarget.value)}
            data-test="new-collection-name"
          />
        </div>
        <div>
          <label for="new-collection-description">Description</label>
          <input
            id="new-collection-description"
            value={description}
            onInput={(e) => setDescription(e.currentTarget.value)}
            data-test="new-collection-description"
          />
        </div>
        <div>
          <label for="new-collection-language">Language</label>
          <select
            id="new-collection-language"
            value={language}
            onChange={(e) => setLanguage(e.currentTarget.value)}
            data-test="new-collection-language"
          >
            {LANGUAGES.map(([v, l]) => (
              <option key={v} value={v}>
                {l}
              </option>
            ))}
          </select>
        </div>
      </div>
      <ErrorNote error={error} test="create-collection-error" />
      <button type="submit" class="primary" disabled={busy} data-test="create-collection">
        {busy ? "Creating…" : "Create collection"}
      </button>
    </form>
  );
}

export function Collections({ user }) {
  const { data, error, reload } = useLoad("/api/v1/collections");
  const canCreate = user.role === "admin" || user.role === "editor";
  return (
    <section aria-labelledby="collections-title">
      <h1 id="collections-title">Collections</h1>
      <ErrorNote error={error} />
      {data && (
        <div class="table-wrap">
          <table data-test="collections-table">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Description</th>
                <th scope="col">Owner</th>
                <th scope="col" class="num">Documents</th>
                <th scope="col" class="num">In progress</th>
                <th scope="col" class="num">Failed</th>
                <th scope="col" class="num">Chunks</th>
                <th scope="col" class="num">Size</th>
                <th scope="col">Created</th>
              </tr>
            </thead>
            <tbody>
              {data.map((c) => (
                <tr key={c.id} data-test={`collection-row-${c.name}`}>
                  <td>
                    <a href={`#/collections/${encodeURIComponent(c.name)}`} data-test={`collection-link-${c.name}`}>
                      {c.name}
                    </a>
                  </td>
                  <td>{c.description}</td>
                  <td>{c.owner}</td>
                  <td class="num">{c.counts.documents}</td>
                  <td class="num">{pending(c)}</td>
                  <td class="num">{(c.counts.by_status || {}).failed || 0}</td>
                  <td class="num">{c.counts.chunks}</td>
                  <td class="num">{bytes(c.counts.bytes)}</td>
                  <td>{when(c.created_at)}</td>
                </tr>
              ))}
              {data.length === 0 && (
                <tr>
                  <td colSpan={9} class="muted">
                    No collections you may read yet.
                  </td>
                </tr>
              )}
            </tbody>
          </table>
        </div>
      )}
      {canCreate && (
        <CreateForm
          onCreated={(name) => {
            reload();
            window.location.hash = `#/collections/${encodeURIComponent(name)}`;
          }}
        />
      )}
    </section>
  );
}
