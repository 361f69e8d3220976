// A multi-select of the collections the user may read, as a group of checkboxes; none
// checked means all of them.
import { ErrorNote } from "./ErrorNote.jsx";
import { useLoad } from "./hooks.js";

export function CollectionPicker({ selected, onChange, idPrefix }) {
  const { data, error } = useLoad("/api/v1/collections");
  const toggle = (name, on) => onChange(on ? [...selected, name] : selected.filter((n) => n !== name));
  return (
    <fieldset class="picker" data-test={`${idPrefix}-collections`}>
      <legend>Collections {selected.length === 0 && <span class="muted">(all)</span>}</legend>
      <ErrorNote error={error} />
      {data && data.length === 0 && <p class="muted small">No collections yet.</p>}
      {data &&
        data.map((c) => (
          <label key={c.name} class="check" for={`${idPrefix}-c-${c.id}`}>
            <input
              type="checkbox"
              id={`${idPrefix}-c-${c.id}`}
              checked={selected.includes(c.name)}
              onChange={(e) => toggle(c.name, e.currentTarget.checked)}
              data-test={`${idPrefix}-collection-${c.name}`}
            />
            {c.name}
          </label>
        ))}
    </fieldset>
  );
}
