// One collection: its counts, the documents with their status (polled while any is being
// indexed), uploads, sharing with users and groups, and deletion.
import { useState } from "preact/hooks";
import { call, get, openDocument, seg } from "../api.js";
import { ErrorNote } from "../components/ErrorNote.jsx";
import { useAction, useLoad, usePoll } from "../components/hooks.js";
import { Uploader } from "../components/Uploader.jsx";
import { bytes, when } from "../format.js";

const BUSY = ["queued", "extracting", "embedding"];

async function allDocuments(name) {
  const docs = [];
  let after = null;
  do {
    const page = await get(
      `/api/v1/collections/${seg(name)}/documents?limit=1000${after != null ? `&after=${after}` : ""}`,
    );
    docs.push(...page.documents);
    after = page.next_after;
  } while (after != null);
  return docs;
}

function DocumentRow({ doc, canWrite, onChanged }) {
  const [confirming, setConfirming] = useState(false);
  const [open, , openError] = useAction(() => openDocument(doc.id));
  const [remove, removing, removeError] = useAction(async () => {
    await call("DELETE", `/api/v1/documents/${seg(doc.id)}`);
    onChanged();
  });
  return (
    <tr data-test={`document-row-${doc.id}`} data-filename={doc.filename}>
      <td>
        <button type="button" class="link" onClick={() => open()} data-test="document-open">
          {doc.title || doc.filename}
        </button>
        {doc.title && <div class="muted small">{doc.filename}</div>}
        <ErrorNote error={openError} />
      </td>
      <td>{doc.format}</td>
      <td class="num">{bytes(doc.size)}</td>
      <td class="num">{doc.pages ?? "–"}</td>
      <td class="num">{doc.chunks}</td>
      <td>
        <span class={`badge ${doc.status}`} data-test="document-status">
          {doc.status}
        </span>
        {doc.error && (
          <div class="error small" data-test="document-error">
            {doc.error.reason}: {doc.error.message}
          </div>
        )}
      </td>
      <td>{when(doc.updated_at)}</td>
      <td>
        {canWrite &&
          (confirming ? (
            <span class="row nowrap">
              <button type="button" class="danger" disabled={removing} onClick={() => remove()} data-test="document-delete-confirm">
                Delete
              </button>
              <button type="button" onClick={() => setConfirming(false)}>
                Cancel
              </button>
            </span>
          ) : (
            <button
              type="button"
              aria-label={`Delete ${doc.filename}`}
              onClick={() => setConfirming(true)}
              data-test="document-delete"
            >
              Delete
            </button>
          ))}
        <ErrorNote error={removeError} />
      </td>
    </tr>
  );
}

function Sharing({ collection, onSaved, admin }) {
  const [grants, setGrants] = useState(() =>
    (collection.grants || []).map((g) => ({ kind: g.user != null ? "user" : "group", who: g.user ?? g.group, access: g.access })),
  );
  const [saved, setSaved] = useState("");
  const users = useLoad(admin ? "/api/v1/users" : null);
  const groups = useLoad(admin ? "/api/v1/groups" : null);
  const set = (i, change) => setGrants(grants.map((g, j) => (i === j ? { ...g, ...change } : g)));
  const [save, busy, error] = useAction(async () => {
    const body = grants.filter((g) => g.who.trim()).map((g) => ({ [g.kind]: g.who.trim(), access: g.access }));
    await call("PATCH", `/api/v1/collections/${seg(collection.name)}`, { grants: body });
    setSaved("Sharing saved.");
    onSaved();
  });
  return (
    <section class="card" aria-labelledby="share-title" data-test="sharing">
      <h2 id="share-title">Sharing</h2>
      <p class="muted small">Owner: {collection.owner}. Admins can read and manage every collection.</p>
      <datalist id="grant-users">
        {(users.data || []).map((u) => (
          <option key={u.name} value={u.name} />
        ))}
      </datalist>
      <datalist id="grant-groups">
        {(groups.data || []).map((g) => (
          <option key={g.name} value={g.name} />
        ))}
      </datalist>
      {grants.length === 0 && <p class="muted">Not shared with anyone.</p>}
      <ul class="grants">
        {grants.map((g, i) => (
          <li key={i} class="row">
            <select aria-label="User or group" value={g.kind} onChange={(e) => set(i, { kind: e.currentTarget.value })} data-test={`grant-kind-${i}`}>
              <option value="user">User</option>
              <option value="group">Group</option>
            </select>
            <input
              aria-label={g.kind === "user" ? "User name" : "Group name"}
              list={g.kind === "user" ? "grant-users" : "grant-groups"}
              value={g.who}
              onInput={(e) => set(i, { who: e.currentTarget.value })}
              data-test={`grant-name-${i}`}
            />
            <select aria-label="Access" value={g.access} onChange={(e) => set(i, { access: e.currentTarget.value })} data-test={`grant-access-${i}`}>
              <option value="read">Read</option>
              <option value="write">Write</option>
            </select>
            <button type="button" aria-label={`Remove the grant to ${g.who || "this entry"}`} onClick={() => setGrants(grants.filter((_, j) => j !== i))} data-test={`grant-remove-${i}`}>
              Remove
            </button>
          </li>
        ))}
      </ul>
      <div class="row">
        <button type="button" onClick={() => setGrants([...grants, { kind: "user", who: "", access: "read" }])} data-test="grant-add">
          Add a grant
        </button>
        <button type="button" class="primary" disabled={busy} onClick={() => save()} data-test="grant-save">
          {busy ? "Saving…" : "Save sharing"}
        </button>
        <span class="muted small" role="status">
          {saved}
        </span>
      </div>
      <ErrorNote error={error} test="grant-error" />
    </section>
  );
}

function DeleteCollection({ collection }) {
  const [confirming, setConfirming] = useState(false);
  const [remove, busy, error] = useAction(async () => {
    await call("DELETE", `/api/v1/collections/${seg(collection.name)}`);
    window.location.hash = "#/collections";
  });
  return (
    <section class="card danger-zone" aria-labelledby="delete-title">
      <h2 id="delete-title">Delete</h2>
      {confirming ? (
        <div>
          <p>
            Delete <strong>{collection.name}</strong> with its {collection.counts.documents} documents, their
            files and indexes? This cannot be undone.
          </p>
          <div class="row">
            <button type="button" class="danger" disabled={busy} onClick={() => remove()} data-test="collection-delete-confirm">
              {busy ? "Deleting…" : "Delete for good"}
            </button>
            <button type="button" onClick={() => setConfirming(false)} data-test="collection-delete-cancel">
              Cancel
            </button>
          </div>
        </div>
      ) : (
        <button type="button" class="danger" onClick={() => setConfirming(true)} data-test="collection-delete">
          Delete this collection
        </button>
      )}
      <ErrorNote error={error} test="collection-delete-error" />
    </section>
  );
}

export function Collection({ name, user }) {
  const info = useLoad(`/api/v1/collections/${seg(name)}`);
  const docs = useLoad(() => allDocuments(name), [name]);
  const busy = (docs.data || []).some((d) => BUSY.includes(d.status));
  usePoll(
    () => {
      docs.reload();
      info.reload();
    },
    1500,
    busy,
  );
  const c = info.data;
  const canWrite = c && (c.access === "write" || c.access === "manage");
  const refresh = () => {
    docs.reload();
    info.reload();
  };
  return (
    <section aria-labelledby="collection-title">
      <p class="crumbs">
        <a href="#/collections">Collections</a> /
      </p>
      <h1 id="collection-title">{name}</h1>
      <ErrorNote error={info.error} />
      {c && (
        <dl class="facts" data-test="collection-facts">
          <div>
            <dt>Documents</dt>
            <dd>{c.counts.documents}</dd>
          </div>
          <div>
            <dt>Chunks</dt>
            <dd>{c.counts.chunks}</dd>
          </div>
          <div>
            <dt>Size</dt>
            <dd>{bytes(c.counts.bytes)}</dd>
          </div>
          <div>
            <dt>Language</dt>
            <dd>{c.language}</dd>
          </div>
          <div>
            <dt>Embedding model</dt>
            <dd>{c.embedding_model}</dd>
          </div>
          <div>
            <dt>Your access</dt>
            <dd>{c.access}</dd>
          </div>
        </dl>
      )}
      {c && c.description && <p>{c.description}</p>}
      {canWrite && <Uploader collection={name} onUploaded={refresh} />}
      <section class="card" aria-labelledby="documents-title">
        <div class="row spread">
          <h2 id="documents-title">Documents</h2>
          <span class="muted small" aria-live="polite">
            {busy ? "Indexing…" : ""}
          </span>
        </div>
        <ErrorNote error={docs.error} />
        {docs.data && (
          <div class="table-wrap">
            <table data-test="documents-table">
              <thead>
                <tr>
                  <th scope="col">Document</th>
                  <th scope="col">Format</th>
                  <th scope="col" class="num">Size</th>
                  <th scope="col" class="num">Pages</th>
                  <th scope="col" class="num">Chunks</th>
                  <th scope="col">Status</th>
                  <th scope="col">Updated</th>
                  <th scope="col">
                    <span class="visually-hidden">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {docs.data.map((d) => (
                  <DocumentRow key={d.id} doc={d} canWrite={canWrite} onChanged={refresh} />
                ))}
                {docs.data.length === 0 && (
                  <tr>
                    <td colSpan={8} class="muted">
                      No documents yet.
                    </td>
                  </tr>
                )}
              </tbody>
            </table>
          </div>
        )}
      </section>
      {c && c.access === "manage" && <Sharing key={c.id} collection={c} onSaved={info.reload} admin={user.role === "admin"} />}
      {c && c.access === "manage" && <DeleteCollection collection={c} />}
    </section>
  );
}
