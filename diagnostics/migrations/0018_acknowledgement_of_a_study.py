# "Seen: no AI result" on a study as a whole (issue 33, item 1): a study whose analysis failed before any
# film was assessed has no prediction to acknowledge. Each acknowledgement names its study; the prediction
# is kept for a refused film's and empty for the study's.

import django.db.models.deletion
from django.db import migrations, models


def fill_study(apps, schema_editor):
    Acknowledgement = apps.get_model("diagnostics", "Acknowledgement")
    for acknowledgement in Acknowledgement.objects.select_related("prediction__image").iterator():
        acknowledgement.study_id = acknowledgement.prediction.image.study_id
        acknowledgement.save(update_fields=["study"])


class Migration(migrations.Migration):
    dependencies = [
        ("diagnostics", "0017_prediction_subtype"),
    ]

    operations = [
        migrations.AddField(
            model_name="acknowledgement",
            name="study",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="acknowledgements",
                to="diagnostics.study",
            ),
        ),
        migrations.RunPython(fill_study, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="acknowledgement",
            name="study",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="acknowledgements",
                to="diagnostics.study",
            ),
        ),
        migrations.AlterField(
            model_name="acknowledgement",
            name="prediction",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="acknowledgements",
                to="diagnostics.prediction",
            ),
        ),
    ]
