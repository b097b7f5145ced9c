from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("outposts", "0010_worker_heartbeat"),
    ]

    operations = [
        migrations.AddField(
            model_name="outpost",
            name="allowed_env",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text=(
                    "Environment variables of the Hub's request passed on to the spawner besides "
                    "JUPYTERHUB_* and JUPYTER_*: names or glob patterns (* and ?), e.g. "
                    '["TZ", "MY_SITE_*"]. Every other variable is dropped: PATH, LD_PRELOAD, '
                    "PYTHONSTARTUP and the like would change what runs in the server."
                ),
                verbose_name="allowed env",
            ),
        ),
    ]
