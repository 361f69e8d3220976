// The sign-in page: name and password, the server's message on failure, and how to create
// the first admin.
import { useState } from "preact/hooks";
import { isLocked, signIn } from "../api.js";
import { ErrorNote } from "../components/ErrorNote.jsx";
import { useAction } from "../components/hooks.js";

export function SignIn() {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [run, busy, error] = useAction(signIn);
  const submit = (e) => {
    e.preventDefault();
    run(username, password);
  };
  return (
    <main id="main" class="center-page">
      <form class="card narrow" onSubmit={submit} data-test="sign-in-form">
        <h1>Sign in to sparkbrain</h1>
        <label for="signin-user">Name</label>
        <input
          id="signin-user"
          name="username"
          autocomplete="username"
          required
          value={username}
          onInput={(e) => setUsername(e.currentTarget.value)}
          data-test="sign-in-username"
        />
        <label for="signin-password">Password</label>
        <input
          id="signin-password"
          name="password"
          type="password"
          autocomplete="current-password"
          required
          value={password}
          onInput={(e) => setPassword(e.currentTarget.value)}
          data-test="sign-in-password"
        />
        {error && !isLocked(error) && <ErrorNote error={error} test="sign-in-error" />}
        <button type="submit" class="primary" disabled={busy} data-test="sign-in-submit">
          {busy ? "Signing in…" : "Sign in"}
        </button>
        <p class="hint" data-test="first-run-hint">
          First time? Create the admin on the box: <code>sudo sparkbrain user add admin --role admin</code>
        </p>
      </form>
    </main>
  );
}
