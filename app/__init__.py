"""The system assembled from the roles: the composition (`wire`), every role in one
process, role processes, the dashboard and metrics. Imports the roles; only `cli` imports it."""
