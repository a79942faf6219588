-- POST one fixed JSON body; print a one-line JSON summary when done.
--   wrk ... -s bench/wrk/post.lua URL -- BODY_FILE
-- Latency figures come from wrk's histogram, which wrk has already corrected for
-- coordinated omission by the time done() runs (see bench/README.md).

function init(args)
   local f = assert(io.open(args[1], "rb"))
   wrk.method = "POST"
   wrk.body = f:read("*a")
   wrk.headers["Content-Type"] = "application/json"
   f:close()
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "max": %d}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max))
end
