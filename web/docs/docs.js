// The docs page: Swagger UI (web/docs/vendor, from npm by `make docs-ui`)
// rendering GET /openapi.json of the API that ../config.json names (the
// page's own origin when it names none), with its API key for "Try it out".
"use strict";

(async () => {
  let apiBase = "", apiKey = "";
  try {
    const resp = await fetch(new URL("../config.json", document.baseURI), { cache: "no-cache" });
    if (resp.ok) {
      const config = await resp.json();
      apiBase = String(config.apiBase || "").replace(/\/+$/, "");
      apiKey = String(config.apiKey || "");
    }
  } catch (err) {
    // No config: the API is on the page's own origin.
  }
  const url = (apiBase || new URL("..", document.baseURI).href.replace(/\/+$/, "")) + "/openapi.json";
  document.getElementById("doc-link").href = url;
  if (typeof window.SwaggerUIBundle !== "function") {
    document.getElementById("missing").hidden = false;
    return;
  }
  window.ui = window.SwaggerUIBundle({
    url,
    dom_id: "#swagger",
    deepLinking: true,
    tryItOutEnabled: true,
    requestInterceptor: (req) => {
      if (apiKey) req.headers["x-api-key"] = apiKey;
      return req;
    },
  });
})();
