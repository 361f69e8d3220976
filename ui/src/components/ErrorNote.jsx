// An error shown where it happened: the server's title and detail, announced to screen
// readers.

/** Shows `error` (an ApiError or any Error); nothing when there is none. */
export function ErrorNote({ error, test }) {
  if (!error) return null;
  const title = error.title && error.title !== error.detail ? `${error.title}: ` : "";
  return (
    <p class="error" role="alert" data-test={test || "error"}>
      {title}
      {error.detail || error.message}
    </p>
  );
}
