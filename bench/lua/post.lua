-- Small POSTs: every request carries a body the app reads and echoes the length of.  Over
-- nginx's upstream keep-alive these expose a server that closes a kept-alive connection without
-- saying so: nginx may not retry a POST it has already sent, so the client gets a 502.
-- The size comes from bench/matrix.py (POST_BODY_BYTES) through the environment.
local size = tonumber(os.getenv("BENCH_POST_BYTES") or "1024")
wrk.method = "POST"
wrk.body = string.rep("x", size)
wrk.headers["Content-Type"] = "application/octet-stream"
-- wrk.format adds Content-Length from wrk.body.
