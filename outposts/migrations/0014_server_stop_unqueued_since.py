from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("outposts", "0013_help_texts_show_placeholders"),
    ]

    operations = [
        migrations.AddField(
            model_name="server",
            name="stop_unqueued_since",
            field=models.DateTimeField(
                blank=True,
                editable=False,
                help_text="Since when the stop task could not be queued (the task broker was down); the reconciler queues it again, and so does a repeated stop.",
                null=True,
            ),
        ),
    ]
