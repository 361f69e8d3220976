// The API keys page: your keys (admins: everyone's), create one (its secret is shown once,
// with a copy button) and revoke.
import { useState } from "preact/hooks";
import { call, seg } from "../api.js";
import { ErrorNote } from "../components/ErrorNote.jsx";
import { useAction, useLoad } from "../components/hooks.js";
import { when } from "../format.js";

function NewKey({ created }) {
  const [copied, setCopied] = useState("");
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(created.key);
      setCopied("Copied.");
    } catch (e) {
      setCopied(`Could not copy: ${e.message}`);
    }
  };
  return (
    <div class="notice" role="status" data-test="new-key">
      <p>
        <strong>Store this key now: it is not shown again.</strong> Key “{created.name}” for {created.owner}:
      </p>
      <div class="row">
        <code class="secret" data-test="new-key-secret">
          {created.key}
        </code>
        <button type="button" onClick={copy} data-test="copy-key">
          Copy
        </button>
        <span class="muted small">{copied}</span>
      </div>
    </div>
  );
}

function KeyRow({ k, onChanged }) {
  const [revoke, busy, error] = useAction(async () => {
    await call("DELETE", `/api/v1/keys/${seg(k.id)}`);
    onChanged();
  });
  return (
    <tr data-test={`key-row-${k.id}`}>
      <th scope="row">{k.name}</th>
      <td>{k.owner}</td>
      <td>
        <code>{k.prefix}…</code>
      </td>
      <td>{when(k.created_at)}</td>
      <td>{when(k.last_used_at)}</td>
      <td>
        {k.revoked_at ? (
          <span class="muted">revoked {when(k.revoked_at)}</span>
        ) : (
          <button type="button" class="danger" disabled={busy} onClick={() => revoke()} aria-label={`Revoke key ${k.name}`} data-test="key-revoke">
            Revoke
          </button>
        )}
        <ErrorNote error={error} />
      </td>
    </tr>
  );
}

export function Keys({ user }) {
  const admin = user.role === "admin";
  const [all, setAll] = useState(false);
  const { data, error, reload } = useLoad(`/api/v1/keys${all ? "?all=true" : ""}`);
  const [name, setName] = useState("");
  const [owner, setOwner] = useState("");
  const [created, setCreated] = useState(null);
  const [create, busy, createError] = useAction(async () => {
    const body = { name };
    if (admin && owner.trim()) body.owner = owner.trim();
    setCreated(await call("POST", "/api/v1/keys", body));
    setName("");
    setOwner("");
    reload();
  });
  return (
    <section aria-labelledby="keys-title">
      <h1 id="keys-title">API keys</h1>
      <p class="muted">Programs use an API key as a bearer token, e.g. with the OpenAI SDKs or <code>sparkbrain ingest</code>.</p>
      <form
        class="card"
        onSubmit={(e) => {
          e.preventDefault();
          create();
        }}
        data-test="create-key-form"
      >
        <h2>New key</h2>
        <div class="grid3">
          <div>
            <label for="new-key-name">Name</label>
            <input id="new-key-name" required placeholder="nightly-import" value={name} onInput={(e) => setName(e.currentTarget.value)} data-test="new-key-name" />
          </div>
          {admin && (
            <div>
              <label for="new-key-owner">Owner (empty: you)</label>
              <input id="new-key-owner" value={owner} onInput={(e) => setOwner(e.currentTarget.value)} data-test="new-key-owner" />
            </div>
          )}
        </div>
        <ErrorNote error={createError} test="create-key-error" />
        <button type="submit" class="primary" disabled={busy} data-test="create-key">
          Create key
        </button>
        {created && <NewKey created={created} />}
      </form>
      <section class="card" aria-labelledby="key-list-title">
        <div class="row spread">
          <h2 id="key-list-title">{all ? "All keys" : "Your keys"}</h2>
          {admin && (
            <label class="check" for="keys-all">
              <input type="checkbox" id="keys-all" checked={all} onChange={(e) => setAll(e.currentTarget.checked)} data-test="keys-all" />
              Everyone's keys
            </label>
          )}
        </div>
        <ErrorNote error={error} />
        {data && (
          <div class="table-wrap">
            <table data-test="keys-table">
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Owner</th>
                  <th scope="col">Prefix</th>
                  <th scope="col">Created</th>
                  <th scope="col">Last used</th>
                  <th scope="col">
                    <span class="visually-hidden">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {data.map((k) => (
                  <KeyRow key={k.id} k={k} onChanged={reload} />
                ))}
                {data.length === 0 && (
                  <tr>
                    <td colSpan={6} class="muted">
                      No keys.
                    </td>
                  </tr>
                )}
              </tbody>
            </table>
          </div>
        )}
      </section>
    </section>
  );
}
