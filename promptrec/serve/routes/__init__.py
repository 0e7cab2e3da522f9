"""The server's routers, one job each: status, recommend, explain (conversations), page."""
