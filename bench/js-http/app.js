// A wasi:http component in JavaScript (componentize-js): the large component of `wasmkube-bench
// component-memory`. Each request builds some garbage, as a real handler does, and the count of requests
// lives on in the instance (a fresh instance per request, so it stays 1 unless the host reuses instances).
let served = 0;
addEventListener("fetch", (event) => {
  served += 1;
  const items = [];
  for (let i = 0; i < 1000; i++) items.push({ i, s: "item-" + i });
  event.respondWith(new Response(`hello from JavaScript, request ${served}, ${items.length} items\n`));
});
