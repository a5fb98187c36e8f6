"""The bottom layer that the launch scripts (scripts/), the drift monitor (monitor/), the
debugger (debugger/) and the local tuner (tune/) share: S3 locations and listings, the progress of
long client-side commands, and the self-contained HTML reports' figures and tables. It imports nothing of the kit's; the training image copies it whole. Bad input raises
ValueError (the scripts turn it into their own error message)."""
