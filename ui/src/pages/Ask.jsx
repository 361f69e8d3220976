// The Ask page: pick collections, ask, watch the answer stream in with numbered citations
// that open their source document and show the cited passage; chats in a side list; copy
// the answer with its sources.
import { useEffect, useRef, useState } from "preact/hooks";
import { call, get, openDocument, send, serverEvents, seg } from "../api.js";
import { CollectionPicker } from "../components/CollectionPicker.jsx";
import { ErrorNote } from "../components/ErrorNote.jsx";
import { useAction, useLoad } from "../components/hooks.js";
import { when } from "../format.js";

function pages(c) {
  if (c.page_start == null) return "";
  return c.page_end != null && c.page_end !== c.page_start ? `pp. ${c.page_start}–${c.page_end}` : `p. ${c.page_start}`;
}

function sourceLine(c) {
  const page = pages(c);
  return `[${c.n}] ${c.title || c.filename}${c.title ? ` (${c.filename})` : ""}${page ? `, ${page}` : ""}`;
}

// Turns a chat's messages into question/answer turns.
function turnsOf(messages) {
  const turns = [];
  for (const m of messages) {
    if (m.role === "user") turns.push({ question: m.content, answer: "", citations: [] });
    else if (turns.length) {
      const last = turns[turns.length - 1];
      last.answer = m.content;
      last.citations = m.citations || [];
    }
  }
  return turns;
}

// The answer text with each `[n]` made a button that opens citation n.
function AnswerText({ text, citations, onCite }) {
  const parts = [];
  const re = /\[(\d+)\]/g;
  let at = 0;
  let m;
  while ((m = re.exec(text))) {
    const n = Number(m[1]);
    const c = citations.find((x) => x.n === n);
    if (!c) continue;
    parts.push(text.slice(at, m.index));
    parts.push(
      <button type="button" class="cite" key={m.index} aria-label={`Source ${n}`} onClick={() => onCite(c)}>
        {n}
      </button>,
    );
    at = m.index + m[0].length;
  }
  parts.push(text.slice(at));
  return <div class="answer-text">{parts}</div>;
}

function Turn({ turn, index, onCite, selected }) {
  const [copied, setCopied] = useState("");
  const copy = async () => {
    const text = `${turn.answer}\n\nSources:\n${turn.citations.map(sourceLine).join("\n")}\n`;
    try {
      await navigator.clipboard.writeText(text);
      setCopied("Copied the answer and its sources.");
    } catch (e) {
      setCopied(`Could not copy: ${e.message}`);
    }
  };
  return (
    <article class="turn" data-test={`turn-${index}`}>
      <p class="question">{turn.question}</p>
      <div class="answer" aria-live="polite" aria-busy={turn.streaming ? "true" : "false"} data-test="answer">
        {turn.answer ? (
          <AnswerText text={turn.answer} citations={turn.citations} onCite={onCite} />
        ) : (
          turn.streaming && <p class="muted">{turn.citations.length ? "Writing…" : "Retrieving…"}</p>
        )}
        <ErrorNote error={turn.error} test="answer-error" />
      </div>
      {turn.citations.length > 0 && (
        <ol class="citations" data-test="citations">
          {turn.citations.map((c) => (
            <li key={c.n} value={c.n}>
              <button
                type="button"
                class={selected === c ? "link active" : "link"}
                onClick={() => onCite(c)}
                data-test={`citation-${c.n}`}
              >
                {c.title || c.filename}
              </button>{" "}
              <span class="muted small">
                {c.collection} · {c.filename}
                {pages(c) && ` · ${pages(c)}`}
              </span>
            </li>
          ))}
        </ol>
      )}
      {!turn.streaming && turn.answer && (
        <div class="row">
          <button type="button" onClick={copy} data-test="copy-answer">
            Copy answer with sources
          </button>
          <span class="muted small" role="status">
            {copied}
          </span>
        </div>
      )}
    </article>
  );
}

export function Ask() {
  const chats = useLoad("/api/v1/chats");
  const [chat, setChat] = useState(null);
  const [turns, setTurns] = useState([]);
  const [collections, setCollections] = useState([]);
  const [question, setQuestion] = useState("");
  const [asking, setAsking] = useState(false);
  const [cited, setCited] = useState(null);
  const [citeError, setCiteError] = useState(null);
  const bottom = useRef(null);
  const [openChat, loadingChat, chatError] = useAction(async (id) => {
    const full = await get(`/api/v1/chats/${seg(id)}`);
    setChat(id);
    setTurns(turnsOf(full.messages));
    setCited(null);
  });
  const [removeChat, , removeError] = useAction(async (id) => {
    await call("DELETE", `/api/v1/chats/${seg(id)}`);
    if (chat === id) newChat();
    chats.reload();
  });
  function newChat() {
    setChat(null);
    setTurns([]);
    setCited(null);
  }
  useEffect(() => {
    if (bottom.current && bottom.current.scrollIntoView) bottom.current.scrollIntoView({ block: "end" });
  }, [turns.length]);

  const update = (patch) =>
    setTurns((all) => {
      const copy = all.slice();
      const last = copy[copy.length - 1];
      copy[copy.length - 1] = { ...last, ...(typeof patch === "function" ? patch(last) : patch) };
      return copy;
    });

  const ask = async (e) => {
    e.preventDefault();
    const q = question.trim();
    if (!q || asking) return;
    setAsking(true);
    setQuestion("");
    setTurns((all) => [...all, { question: q, answer: "", citations: [], streaming: true }]);
    try {
      let id = chat;
      if (id == null) {
        id = (await call("POST", "/api/v1/chats", { title: q.slice(0, 80) })).id;
        setChat(id);
      }
      const body = { question: q, stream: true, chat: id };
      if (collections.length) body.collections = collections;
      const res = await send("POST", "/api/v1/ask", { json: body });
      for await (const ev of serverEvents(res)) {
        const data = JSON.parse(ev.data);
        if (ev.event === "citations") update({ citations: data.citations || [] });
        else if (ev.event === "delta") update((t) => ({ answer: t.answer + data.text }));
        else if (ev.event === "error") update({ error: { title: `Error ${data.status}`, detail: data.detail } });
      }
    } catch (error) {
      update({ error });
    } finally {
      update({ streaming: false });
      setAsking(false);
      chats.reload();
    }
  };

  const cite = async (c) => {
    setCited(c);
    setCiteError(null);
    try {
      await openDocument(c.document, c.page_start);
    } catch (e) {
      setCiteError(e);
    }
  };

  return (
    <div class="with-side">
      <aside class="side" aria-label="Chats">
        <div class="side-head">
          <h2>Chats</h2>
          <button type="button" onClick={newChat} data-test="new-chat">
            New chat
          </button>
        </div>
        <ErrorNote error={chats.error || chatError || removeError} />
        <ul class="chat-list" data-test="chat-list">
          {(chats.data || []).map((c) => (
            <li key={c.id} class={c.id === chat ? "current" : ""}>
              <button
                type="button"
                class="link chat-title"
                disabled={loadingChat}
                onClick={() => openChat(c.id)}
                aria-current={c.id === chat ? "true" : undefined}
                data-test={`chat-${c.id}`}
              >
                {c.title || "Untitled"}
                <span class="muted small">{when(c.updated_at)}</span>
              </button>
              <button
                type="button"
                class="icon"
                aria-label={`Delete chat ${c.title}`}
                onClick={() => removeChat(c.id)}
                data-test={`delete-chat-${c.id}`}
              >
                ×
              </button>
            </li>
          ))}
          {chats.data && chats.data.length === 0 && <li class="muted small">No chats yet.</li>}
        </ul>
      </aside>
      <section class="content" aria-labelledby="ask-title">
        <h1 id="ask-title">Ask</h1>
        <div class="conversation">
          {turns.map((t, i) => (
            <Turn key={i} index={i} turn={t} onCite={cite} selected={cited} />
          ))}
          <div ref={bottom} />
        </div>
        {cited && (
          <section class="passage card" aria-label="Cited passage" data-test="cited-passage">
            <div class="row spread">
              <h2>
                [{cited.n}] {cited.title || cited.filename} {pages(cited) && <span class="muted">· {pages(cited)}</span>}
              </h2>
              <button type="button" class="icon" aria-label="Close the passage" onClick={() => setCited(null)}>
                ×
              </button>
            </div>
            <blockquote>{cited.text}</blockquote>
            <button type="button" class="link" onClick={() => cite(cited)} data-test="open-cited-document">
              Open the document
            </button>
            <ErrorNote error={citeError} />
          </section>
        )}
        <form class="ask-form card" onSubmit={ask}>
          <CollectionPicker selected={collections} onChange={setCollections} idPrefix="ask" />
          <label for="ask-question">Question</label>
          <textarea
            id="ask-question"
            rows={3}
            value={question}
            onInput={(e) => setQuestion(e.currentTarget.value)}
            onKeyDown={(e) => {
              if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) ask(e);
            }}
            data-test="ask-question"
          />
          <div class="row">
            <button type="submit" class="primary" disabled={asking || !question.trim()} data-test="ask-submit">
              {asking ? "Answering…" : "Ask"}
            </button>
            <span class="muted small">Ctrl+Enter to ask</span>
          </div>
        </form>
      </section>
    </div>
  );
}
