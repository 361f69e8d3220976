// The console's shell: restores the session, routes by the URL's hash, and shows the sign-in
// page, the locked-volume page, or the navigation with the current page.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { isLocked, onSessionChange, refresh, signOut } from "./api.js";
import { ErrorNote } from "./components/ErrorNote.jsx";
import { Ask } from "./pages/Ask.jsx";
import { Audit } from "./pages/Audit.jsx";
import { Collection } from "./pages/Collection.jsx";
import { Collections } from "./pages/Collections.jsx";
import { Keys } from "./pages/Keys.jsx";
import { Locked } from "./pages/Locked.jsx";
import { Models } from "./pages/Models.jsx";
import { Search } from "./pages/Search.jsx";
import { SignIn } from "./pages/SignIn.jsx";
import { System } from "./pages/System.jsx";
import { Users } from "./pages/Users.jsx";

const PAGES = [
  { path: "ask", label: "Ask", page: Ask },
  { path: "search", label: "Search", page: Search },
  { path: "collections", label: "Collections", page: Collections },
  { path: "models", label: "Models", page: Models },
  { path: "keys", label: "API keys", page: Keys },
  { path: "system", label: "System", page: System, admin: true },
  { path: "users", label: "Users", page: Users, admin: true },
  { path: "audit", label: "Audit log", page: Audit, admin: true },
];

function currentRoute() {
  const parts = window.location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  return parts.map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
}

function useRoute() {
  const [route, setRoute] = useState(currentRoute);
  useEffect(() => {
    const changed = () => setRoute(currentRoute());
    window.addEventListener("hashchange", changed);
    return () => window.removeEventListener("hashchange", changed);
  }, []);
  return route;
}

function Shell({ user }) {
  const [section, ...rest] = useRoute();
  const [menuOpen, setMenuOpen] = useState(false);
  const admin = user.role === "admin";
  const visible = PAGES.filter((p) => admin || !p.admin);
  const entry = visible.find((p) => p.path === section);
  useEffect(() => {
    if (!entry) window.location.replace("#/ask");
    setMenuOpen(false);
    document.title = `${entry ? entry.label : "Ask"} · sparkbrain`;
  }, [section]);
  let page = null;
  if (entry && entry.path === "collections" && rest.length) page = <Collection key={rest[0]} name={rest[0]} user={user} />;
  else if (entry) page = <entry.page user={user} />;
  return (
    <div class="shell">
      <header class="topbar">
        <a class="brand" href="#/ask" data-test="brand">
          sparkbrain
        </a>
        <button
          type="button"
          class="menu-toggle"
          aria-expanded={menuOpen ? "true" : "false"}
          aria-controls="main-nav"
          data-test="menu-toggle"
          onClick={() => setMenuOpen(!menuOpen)}
        >
          Menu
        </button>
        <nav id="main-nav" class={menuOpen ? "nav open" : "nav"} aria-label="Main">
          <ul>
            {visible.map((p) => (
              <li key={p.path}>
                <a
                  href={`#/${p.path}`}
                  data-test={`nav-${p.path}`}
                  aria-current={p.path === section ? "page" : undefined}
                >
                  {p.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div class="who">
          <span data-test="current-user">
            {user.name} <span class="muted">({user.role})</span>
          </span>
          <button type="button" class="link" data-test="sign-out" onClick={() => signOut()}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {page}
      </main>
    </div>
  );
}

function App() {
  const [state, setState] = useState({ kind: "loading" });
  const start = () => {
    setState({ kind: "loading" });
    refresh().catch((error) => {
      if (!isLocked(error)) setState({ kind: "error", error });
    });
  };
  useEffect(() => {
    onSessionChange((change) =>
      setState((old) =>
        // A refreshed token for the same user keeps the pages as they are.
        change.kind === "session" && old.kind === "session" && old.user.name === change.user.name ? old : change,
      ),
    );
    start();
  }, []);
  switch (state.kind) {
    case "session":
      return <Shell user={state.user} />;
    case "signed-out":
      return <SignIn />;
    case "locked":
      return <Locked detail={state.detail} />;
    case "error":
      return (
        <main id="main" class="center-page">
          <div class="card narrow">
            <h1>The console cannot reach the daemon</h1>
            <ErrorNote error={state.error} />
            <button type="button" data-test="retry" onClick={start}>
              Try again
            </button>
          </div>
        </main>
      );
    default:
      return (
        <main id="main" class="center-page">
          <p class="muted" aria-live="polite">
            Loading…
          </p>
        </main>
      );
  }
}

render(<App />, document.getElementById("app"));
