# Where and in which form the model ran, on every prediction (ml.serving.runtime, ml.serving.variants).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('diagnostics', '0006_prediction_input_gate'),
    ]

    operations = [
        migrations.AddField(
            model_name='prediction',
            name='execution_provider',
            field=models.CharField(blank=True, max_length=40),
        ),
        migrations.AddField(
            model_name='prediction',
            name='device',
            field=models.CharField(blank=True, max_length=120),
        ),
        migrations.AddField(
            model_name='prediction',
            name='model_variant',
            field=models.CharField(blank=True, max_length=16),
        ),
        migrations.AddField(
            model_name='prediction',
            name='variant_sha256',
            field=models.CharField(blank=True, max_length=64),
        ),
    ]
