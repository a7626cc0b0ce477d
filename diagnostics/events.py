"""Domain events other parts of the portal react to, without the sender knowing them.

`study_finished` is sent after the transaction that moved a study to done or
failed commits; receivers (webhook notifications, heatmaps) get `study_id` and
`status` and should only enqueue work, never do it inline.
"""

from django.dispatch import Signal

study_finished = Signal()
