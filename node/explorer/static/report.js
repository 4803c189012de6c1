/* wulian explorer: the report page's print button. */
(function () {
  "use strict";
  var b = document.getElementById("print-button");
  if (b) b.addEventListener("click", function () { window.print(); });
})();
