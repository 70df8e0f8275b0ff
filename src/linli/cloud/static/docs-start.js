"use strict";
// The API's own document, from this origin; the bearer token is entered under "Authorize".
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
