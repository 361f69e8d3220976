// Small hooks shared by the pages: load data from the API, poll it, and run an action while
// keeping its error for display next to the control that started it.
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { get } from "../api.js";

/**
 * Loads `path` (or runs `fn`) and keeps `{data, error, loading}`; `reload()` loads again
 * without clearing what is shown. A falsy path loads nothing.
 */
export function useLoad(path, deps = []) {
  const [state, setState] = useState({ data: null, error: null, loading: Boolean(path) });
  const seq = useRef(0);
  const reload = useCallback(async () => {
    if (!path) return;
    const mine = ++seq.current;
    setState((s) => ({ ...s, loading: true }));
    try {
      const data = typeof path === "function" ? await path() : await get(path);
      if (mine === seq.current) setState({ data, error: null, loading: false });
    } catch (error) {
      if (mine === seq.current) setState((s) => ({ ...s, error, loading: false }));
    }
  }, [typeof path === "function" ? null : path, ...deps]);
  useEffect(() => {
    reload();
  }, [reload]);
  return { ...state, reload };
}

/** Calls `fn` every `ms` milliseconds while `active`. */
export function usePoll(fn, ms, active = true) {
  const saved = useRef(fn);
  saved.current = fn;
  useEffect(() => {
    if (!active) return undefined;
    const id = setInterval(() => saved.current(), ms);
    return () => clearInterval(id);
  }, [ms, active]);
}

/**
 * Wraps an async action: `[run, busy, error, setError]`. `run(...args)` clears the error,
 * runs the action, and keeps its error (returns undefined then).
 */
export function useAction(action) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const run = async (...args) => {
    setBusy(true);
    setError(null);
    try {
      return await action(...args);
    } catch (e) {
      setError(e);
      return undefined;
    } finally {
      setBusy(false);
    }
  };
  return [run, busy, error, setError];
}
