// The admin API's interactive reference: Swagger UI on this instance's own OpenAPI document.
// Loaded as a file (the content policy allows no inline script).
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var root = document.getElementById("swagger-ui");
    if (!root || !window.SwaggerUIBundle) { return; }
    window.SwaggerUIBundle({
      url: root.getAttribute("data-spec-url"),
      domNode: root,
      deepLinking: true,
      persistAuthorization: false,  // the token stays in this tab's memory only
      tryItOutEnabled: false,
      validatorUrl: null  // never send the document to swagger.io's validator
    });
  });
})();
