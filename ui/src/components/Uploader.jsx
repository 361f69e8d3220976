// Uploads files and whole folders to a collection: drag and drop or file pickers, a few at a
// time, each with its own progress bar and the server's answer (queued, duplicate, or why it
// was refused).
import { useRef, useState } from "preact/hooks";
import { uploadFile } from "../api.js";

const PARALLEL = 3;

// Reads every file under a dropped directory entry.
function readEntry(entry) {
  if (entry.isFile) return new Promise((resolve) => entry.file((f) => resolve([f]), () => resolve([])));
  if (!entry.isDirectory) return Promise.resolve([]);
  const reader = entry.createReader();
  return new Promise((resolve) => {
    const all = [];
    const next = () =>
      reader.readEntries(async (batch) => {
        if (!batch.length) {
          const nested = await Promise.all(all.map(readEntry));
          resolve(nested.flat());
          return;
        }
        all.push(...batch);
        next();
      }, () => resolve([]));
    next();
  });
}

async function droppedFiles(dataTransfer) {
  const entries = [...(dataTransfer.items || [])]
    .map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null))
    .filter(Boolean);
  if (!entries.length) return [...dataTransfer.files];
  return (await Promise.all(entries.map(readEntry))).flat();
}

function outcome(status, body) {
  if (status === 200 && body && body.duplicate) return { state: "duplicate", text: "Already in the collection" };
  return { state: "done", text: "Uploaded, queued for indexing" };
}

export function Uploader({ collection, onUploaded }) {
  const [items, setItems] = useState([]);
  const [over, setOver] = useState(false);
  const queue = useRef([]);
  const running = useRef(0);
  const nextId = useRef(0);

  const patch = (id, change) => setItems((all) => all.map((it) => (it.id === id ? { ...it, ...change } : it)));

  const pump = () => {
    while (running.current < PARALLEL && queue.current.length) {
      const { id, file } = queue.current.shift();
      running.current += 1;
      patch(id, { state: "uploading", text: "Uploading" });
      uploadFile(collection, file, (p) => patch(id, { progress: p }))
        .then(({ status, body }) => {
          patch(id, { progress: 1, ...outcome(status, body) });
          onUploaded();
        })
        .catch((e) =>
          patch(id, {
            state: e.status === 409 ? "duplicate" : "failed",
            text: `${e.status ? `${e.status} ` : ""}${e.detail}`,
          }),
        )
        .finally(() => {
          running.current -= 1;
          pump();
        });
    }
  };

  const add = (files) => {
    const fresh = files
      .filter((f) => f && f.size !== undefined)
      .map((file) => ({ id: nextId.current++, file, name: file.webkitRelativePath || file.name, size: file.size }));
    if (!fresh.length) return;
    setItems((all) => [...fresh.map((f) => ({ ...f, state: "waiting", text: "Waiting", progress: 0 })), ...all]);
    queue.current.push(...fresh);
    pump();
  };

  const pick = (e) => {
    add([...e.currentTarget.files]);
    e.currentTarget.value = "";
  };

  const drop = async (e) => {
    e.preventDefault();
    setOver(false);
    add(await droppedFiles(e.dataTransfer));
  };

  return (
    <section class="card" aria-labelledby="upload-title">
      <h2 id="upload-title">Upload</h2>
      <div
        class={over ? "dropzone over" : "dropzone"}
        onDragOver={(e) => {
          e.preventDefault();
          setOver(true);
        }}
        onDragLeave={() => setOver(false)}
        onDrop={drop}
        data-test="dropzone"
      >
        <p>Drop files or folders here, or</p>
        <div class="row center">
          <input id="upload-files" class="visually-hidden" type="file" multiple onChange={pick} data-test="upload-files" />
          <label class="button" for="upload-files">
            Choose files
          </label>
          <input
            id="upload-folder"
            class="visually-hidden"
            type="file"
            multiple
            webkitdirectory
            onChange={pick}
            data-test="upload-folder"
          />
          <label class="button" for="upload-folder">
            Choose a folder
          </label>
        </div>
      </div>
      {items.length > 0 && (
        <ul class="uploads" aria-live="polite" data-test="uploads">
          {items.map((it) => (
            <li key={it.id} class={`upload ${it.state}`} data-test="upload-item" data-state={it.state}>
              <span class="upload-name">{it.name}</span>
              <progress max="1" value={it.progress} aria-label={`Upload of ${it.name}`} />
              <span class="upload-status" data-test="upload-status">
                {it.text}
              </span>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
