// A search snippet with the query's words marked. The API gives byte ranges of the UTF-8
// text; the pieces are built as text nodes and <mark> elements, never as HTML.

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function Highlighted({ text, highlights }) {
  const bytes = encoder.encode(text);
  const ranges = (highlights || []).slice().sort((a, b) => a[0] - b[0]);
  const parts = [];
  let at = 0;
  for (const [start, end] of ranges) {
    if (start < at || end > bytes.length || end <= start) continue;
    parts.push(decoder.decode(bytes.subarray(at, start)));
    parts.push(<mark key={start}>{decoder.decode(bytes.subarray(start, end))}</mark>);
    at = end;
  }
  parts.push(decoder.decode(bytes.subarray(at)));
  return <p class="snippet">{parts}</p>;
}
