"""Clinical domain: care teams, patients, studies, images, predictions, model versions, audit."""
