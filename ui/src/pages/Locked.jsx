// The locked-volume page: tells everyone the data volume is locked, and offers the unlock
// form (the server checks that the name and password are an admin's), then waits until the
// daemon is ready and reloads.
import { useState } from "preact/hooks";
import { lockedVolumes, unlockVolume, waitReady } from "../api.js";
import { ErrorNote } from "../components/ErrorNote.jsx";
import { useAction } from "../components/hooks.js";

export function Locked({ detail }) {
  const [volume, setVolume] = useState("");
  const [volumes, setVolumes] = useState([]);
  const [admin, setAdmin] = useState("");
  const [password, setPassword] = useState("");
  const [passphrase, setPassphrase] = useState("");
  const [phase, setPhase] = useState("form");
  const [list, listing, listError] = useAction(async () => {
    const found = (await lockedVolumes(admin, password)).volumes || [];
    setVolumes(found);
    const data = found.find((v) => v.data && !v.unlocked) || found.find((v) => !v.unlocked);
    if (data && !volume) setVolume(data.name);
  });
  const [unlock, unlocking, unlockError] = useAction(async () => {
    await unlockVolume(volume, admin, password, passphrase);
    setPassphrase("");
    setPhase("waiting");
    await waitReady();
    window.location.reload();
  });
  const submit = (e) => {
    e.preventDefault();
    unlock();
  };
  return (
    <main id="main" class="center-page">
      <div class="card narrow">
        <h1>The data volume is locked</h1>
        <p data-test="locked-notice">
          sparkbrain keeps its data on an encrypted volume that is locked now, so nothing can be
          read or changed until an admin unlocks it.
        </p>
        {detail && <p class="muted small">{detail}</p>}
        {phase === "waiting" ? (
          <p aria-live="polite" data-test="unlock-waiting">
            Unlocked. Waiting for the daemon to open its data…
          </p>
        ) : (
          <form onSubmit={submit} data-test="unlock-form">
            <h2>Unlock (admins)</h2>
            <label for="unlock-admin">Admin name</label>
            <input
              id="unlock-admin"
              autocomplete="username"
              required
              value={admin}
              onInput={(e) => setAdmin(e.currentTarget.value)}
              data-test="unlock-admin"
            />
            <label for="unlock-password">Admin password</label>
            <input
              id="unlock-password"
              type="password"
              autocomplete="current-password"
              required
              value={password}
              onInput={(e) => setPassword(e.currentTarget.value)}
              data-test="unlock-password"
            />
            <label for="unlock-volume">Volume</label>
            <div class="row">
              <input
                id="unlock-volume"
                list="unlock-volumes"
                required
                value={volume}
                onInput={(e) => setVolume(e.currentTarget.value)}
                data-test="unlock-volume"
              />
              <datalist id="unlock-volumes">
                {volumes.map((v) => (
                  <option key={v.name} value={v.name}>
                    {v.unlocked ? "unlocked" : "locked"}
                    {v.data ? ", data volume" : ""}
                  </option>
                ))}
              </datalist>
              <button
                type="button"
                disabled={listing || !admin || !password}
                onClick={() => list()}
                data-test="unlock-list-volumes"
              >
                {listing ? "Listing…" : "List volumes"}
              </button>
            </div>
            <ErrorNote error={listError} test="unlock-list-error" />
            <label for="unlock-passphrase">Passphrase</label>
            <input
              id="unlock-passphrase"
              type="password"
              autocomplete="off"
              value={passphrase}
              onInput={(e) => setPassphrase(e.currentTarget.value)}
              data-test="unlock-passphrase"
            />
            <p class="hint">Leave the passphrase empty to use the volume's key file or TPM2 key.</p>
            <ErrorNote error={unlockError} test="unlock-error" />
            <button type="submit" class="primary" disabled={unlocking} data-test="unlock-submit">
              {unlocking ? "Unlocking…" : "Unlock"}
            </button>
          </form>
        )}
      </div>
    </main>
  );
}
