"""`reconciler report access`: who can see which tenant's records, proven on the server, as
rows (model.py), built from the manifests, the live memberships and counts made on behalf of
each member (build.py: reads; rows.py: pure), rendered by views/report_*.py."""
