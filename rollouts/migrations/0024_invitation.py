import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    """Invitation: the account an organisation admin created and whether its e-mail has gone, so that the
    beat job `send_unsent_invitations` sends one whose task was lost. A new, empty table: accounts invited
    before it have no row, and their e-mails are not sent again."""

    dependencies = [
        ('rollouts', '0023_upload_job'),
    ]

    operations = [
        migrations.CreateModel(
            name='Invitation',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('emailed_at', models.DateTimeField(blank=True, null=True)),
                ('invited_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('user', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='invitation', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'indexes': [models.Index(condition=models.Q(('emailed_at__isnull', True)), fields=['created_at'], name='invitation_not_emailed')],
            },
        ),
    ]
