// An app that uses the package as a team would: the notification center in its top bar.
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { NotificationCenter } from "@content-notifications/web/react";
import "@content-notifications/web/styles.css";

// Where the notification service lives (another origin); the access token comes from the app's own
// sign-in (here the test's window.getTestToken), never from the URL.
const api = new URLSearchParams(location.search).get("api");

function App() {
  return (
    <>
      <header className="bar">
        <h1>Studio</h1>
        <NotificationCenter baseUrl={api} getToken={() => window.getTestToken()} toastTimeoutMs={0} />
      </header>
      <main>
        <p>Your videos appear here.</p>
      </main>
    </>
  );
}

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
