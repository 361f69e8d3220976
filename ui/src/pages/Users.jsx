// The Users page (admins): users with their roles (create, change role, disable, delete) and
// groups with their members.
import { useState } from "preact/hooks";
import { call, seg } from "../api.js";
import { ErrorNote } from "../components/ErrorNote.jsx";
import { useAction, useLoad } from "../components/hooks.js";
import { when } from "../format.js";

const ROLES = ["viewer", "editor", "admin"];

function UserRow({ u, me, onChanged }) {
  const [confirming, setConfirming] = useState(false);
  const [patch, busy, error] = useAction(async (change) => {
    await call("PATCH", `/api/v1/users/${seg(u.name)}`, change);
    onChanged();
  });
  const [remove, removing, removeError] = useAction(async () => {
    await call("DELETE", `/api/v1/users/${seg(u.name)}`);
    onChanged();
  });
  return (
    <tr data-test={`user-row-${u.name}`}>
      <th scope="row">
        {u.name}
        {u.name === me && <span class="muted small"> (you)</span>}
      </th>
      <td>
        <select
          aria-label={`Role of ${u.name}`}
          value={u.role}
          disabled={busy}
          onChange={(e) => patch({ role: e.currentTarget.value })}
          data-test="user-role"
        >
          {ROLES.map((r) => (
            <option key={r} value={r}>
              {r}
            </option>
          ))}
        </select>
      </td>
      <td>
        <label class="check" for={`user-disabled-${u.id}`}>
          <input
            type="checkbox"
            id={`user-disabled-${u.id}`}
            checked={u.disabled}
            disabled={busy}
            onChange={(e) => patch({ disabled: e.currentTarget.checked })}
            data-test="user-disabled"
          />
          disabled
        </label>
      </td>
      <td>{u.groups.join(", ") || "–"}</td>
      <td>{when(u.created_at)}</td>
      <td>
        {confirming ? (
          <span class="row nowrap">
            <button type="button" class="danger" disabled={removing} onClick={() => remove()} data-test="user-delete-confirm">
              Delete {u.name}
            </button>
            <button type="button" onClick={() => setConfirming(false)}>
              Cancel
            </button>
          </span>
        ) : (
          <button type="button" aria-label={`Delete user ${u.name}`} onClick={() => setConfirming(true)} data-test="user-delete">
            Delete
          </button>
        )}
        <ErrorNote error={error || removeError} test="user-error" />
      </td>
    </tr>
  );
}

function NewUser({ onCreated }) {
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [role, setRole] = useState("viewer");
  const [create, busy, error] = useAction(async () => {
    await call("POST", "/api/v1/users", { name, password, role });
    setName("");
    setPassword("");
    onCreated();
  });
  return (
    <form
      class="card"
      onSubmit={(e) => {
        e.preventDefault();
        create();
      }}
      data-test="create-user-form"
    >
      <h2>New user</h2>
      <div class="grid3">
        <div>
          <label for="new-user-name">Name</label>
          <input id="new-user-name" required autocomplete="off" value={name} onInput={(e) => setName(e.currentTarget.value)} data-test="new-user-name" />
        </div>
        <div>
          <label for="new-user-password">Password</label>
          <input
            id="new-user-password"
            type="password"
            required
            autocomplete="new-password"
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
            data-test="new-user-password"
          />
        </div>
        <div>
          <label for="new-user-role">Role</label>
          <select id="new-user-role" value={role} onChange={(e) => setRole(e.currentTarget.value)} data-test="new-user-role">
            {ROLES.map((r) => (
              <option key={r} value={r}>
                {r}
              </option>
            ))}
          </select>
        </div>
      </div>
      <ErrorNote error={error} test="create-user-error" />
      <button type="submit" class="primary" disabled={busy} data-test="create-user">
        Create user
      </button>
    </form>
  );
}

function GroupCard({ g, users, onChanged }) {
  const [member, setMember] = useState("");
  const [change, busy, error] = useAction(async (method, user) => {
    await call(method, `/api/v1/groups/${seg(g.name)}/members/${seg(user)}`);
    setMember("");
    onChanged();
  });
  const [remove, removing, removeError] = useAction(async () => {
    await call("DELETE", `/api/v1/groups/${seg(g.name)}`);
    onChanged();
  });
  return (
    <li class="group" data-test={`group-${g.name}`}>
      <div class="row spread">
        <h3>{g.name}</h3>
        <button type="button" class="danger" disabled={removing} onClick={() => remove()} aria-label={`Delete group ${g.name}`} data-test="group-delete">
          Delete group
        </button>
      </div>
      <ul class="chips">
        {g.members.map((m) => (
          <li key={m}>
            {m}
            <button type="button" class="icon" aria-label={`Remove ${m} from ${g.name}`} disabled={busy} onClick={() => change("DELETE", m)} data-test={`member-remove-${m}`}>
              ×
            </button>
          </li>
        ))}
        {g.members.length === 0 && <li class="muted small plain">No members.</li>}
      </ul>
      <form
        class="row"
        onSubmit={(e) => {
          e.preventDefault();
          if (member) change("PUT", member);
        }}
      >
        <select aria-label={`User to add to ${g.name}`} value={member} onChange={(e) => setMember(e.currentTarget.value)} data-test="member-select">
          <option value="">Add a member…</option>
          {users
            .filter((u) => !g.members.includes(u.name))
            .map((u) => (
              <option key={u.name} value={u.name}>
                {u.name}
              </option>
            ))}
        </select>
        <button type="submit" disabled={busy || !member} data-test="member-add">
          Add
        </button>
      </form>
      <ErrorNote error={error || removeError} />
    </li>
  );
}

function Groups({ users, onChanged }) {
  const groups = useLoad("/api/v1/groups");
  const [name, setName] = useState("");
  const reload = () => {
    groups.reload();
    onChanged();
  };
  const [create, busy, error] = useAction(async () => {
    await call("POST", "/api/v1/groups", { name });
    setName("");
    reload();
  });
  return (
    <section class="card" aria-labelledby="groups-title">
      <h2 id="groups-title">Groups</h2>
      <ErrorNote error={groups.error} />
      <ul class="groups">
        {(groups.data || []).map((g) => (
          <GroupCard key={g.id} g={g} users={users} onChanged={reload} />
        ))}
        {groups.data && groups.data.length === 0 && <li class="muted">No groups yet.</li>}
      </ul>
      <form
        class="row"
        onSubmit={(e) => {
          e.preventDefault();
          create();
        }}
        data-test="create-group-form"
      >
        <label for="new-group-name">New group</label>
        <input id="new-group-name" required value={name} onInput={(e) => setName(e.currentTarget.value)} data-test="new-group-name" />
        <button type="submit" disabled={busy} data-test="create-group">
          Create group
        </button>
      </form>
      <ErrorNote error={error} test="create-group-error" />
    </section>
  );
}

export function Users({ user }) {
  const { data, error, reload } = useLoad("/api/v1/users");
  return (
    <section aria-labelledby="users-title">
      <h1 id="users-title">Users</h1>
      <ErrorNote error={error} />
      {data && (
        <div class="table-wrap card">
          <table data-test="users-table">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Role</th>
                <th scope="col">State</th>
                <th scope="col">Groups</th>
                <th scope="col">Created</th>
                <th scope="col">
                  <span class="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {data.map((u) => (
                <UserRow key={u.id} u={u} me={user.name} onChanged={reload} />
              ))}
            </tbody>
          </table>
        </div>
      )}
      <NewUser onCreated={reload} />
      <Groups users={data || []} onChanged={reload} />
    </section>
  );
}
