// The main edge function of a fresh instance.
Deno.serve(() => new Response(JSON.stringify({ message: "Hello from the fleet" }), {
  headers: { "Content-Type": "application/json" },
}));
