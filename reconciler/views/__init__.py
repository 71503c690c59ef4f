"""Views: how each command's results look, per format (Terraform's `command/views`). Commands
and packages hand a view data (a Plan, typed events, a result record); the view words it. Each
command's views are a table from format name to view class, so a new format is a new class."""
