"""Imported first by the supervisor's forkserver (its preload list), before torch: ties the forkserver's
life to the frontend's, then names the forkserver as the parent its containers die with (see
`codecomp.serve.lifeline`). Importing it does something on purpose; nothing else imports it.
"""

from codecomp.serve import lifeline

lifeline.die_with_parent()
lifeline.mark_parent()
