wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.body = '{"model": "MODEL", "messages": [{"role": "user", "content": "hello from the benchmark"}]}'
