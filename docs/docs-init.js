// Swagger UI on paymentsd's own document, /openapi.json beside /docs.
// Nothing is loaded from elsewhere: no validator badge, no CDN.
"use strict";
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: new URL("openapi.json", document.baseURI).href,
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    displayOperationId: true,
    displayRequestDuration: true,
    validatorUrl: null
  });
});
