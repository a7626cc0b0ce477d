# A DICOM peer is its AE title and the addresses it may call from (issue 31, item 3); a patient a PACS
# registers may have no birth date (issue 32, item 3).

import ipaddress

from django.db import migrations, models

import diagnostics.models


def allow_results_host(apps, schema_editor):
    """An existing peer may keep calling from the address its results go to, when that is an IP address;
    a peer registered by host name can call again once an administrator lists its addresses."""
    DicomPeer = apps.get_model("diagnostics", "DicomPeer")
    for peer in DicomPeer.objects.all():
        try:
            ipaddress.ip_address(peer.host.strip())
        except ValueError:
            continue
        peer.allowed_networks = peer.host.strip()
        peer.save(update_fields=["allowed_networks"])


class Migration(migrations.Migration):
    dependencies = [
        ("diagnostics", "0014_acknowledgement"),
    ]

    operations = [
        migrations.AddField(
            model_name="dicompeer",
            name="allowed_networks",
            field=models.TextField(
                blank=True,
                help_text="Addresses or networks it may call from, one per line or comma-separated (10.1.2.3, "
                "10.1.0.0/16, fd00::/8). Empty: it cannot call (every association from it is rejected).",
                validators=[diagnostics.models.validate_ip_networks],
            ),
        ),
        migrations.AddField(
            model_name="dicompeer",
            name="max_associations",
            field=models.PositiveSmallIntegerField(
                default=4, help_text="Associations it may hold open at once; one more is rejected (transient)."
            ),
        ),
        migrations.AlterField(
            model_name="patient",
            name="birth_date",
            field=models.DateField(blank=True, null=True),
        ),
        migrations.RunPython(allow_results_host, migrations.RunPython.noop),
    ]
