from django.dispatch import Signal

#: Sent after the API enqueued a task (kwargs: task_name, queue); web metrics count it.
task_enqueued = Signal()
