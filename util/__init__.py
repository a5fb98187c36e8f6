"""The bottom layer that the launch scripts (scripts/), the drift monitor (monitor/) and the
local tuner (tune/) share: S3 locations and listings, and the progress of long client-side
commands. It imports nothing of the kit's; the training image copies it whole. Bad input raises
ValueError (the scripts turn it into their own error message)."""
