"""Every read goes through a function here; reads of clinical data check access.

A user sees only the patients, studies and images of their own care team; a lookup outside it raises
Http404, so another team's record is indistinguishable from one that does not exist. Clinical lists never
include shadow predictions.

One module per entity (`patients`, `studies`, `images`, `predictions`, `model_versions`, `training_runs`,
`api_tokens`), each function also importable from here; the deliveries an integration sent are read in its
folder (diagnostics/integrations/<name>/selectors.py). Beside them: `study_results` (a study's films with
their assessments, and `study_result`, the one owner of the study-result rule), `monitoring` (a model's live
use, for admins), `heatmaps` (where a prediction's heatmap stands), `comparison` (a patient's previous study
beside this one) and `warnings` (what a study is flagged for).
"""

from __future__ import annotations

from .api_tokens import api_token_get as api_token_get
from .api_tokens import api_token_list as api_token_list
from .images import image_get_for_user as image_get_for_user
from .model_versions import model_version_active as model_version_active
from .model_versions import model_version_get as model_version_get
from .model_versions import model_version_list as model_version_list
from .model_versions import shadow_comparison as shadow_comparison
from .patients import patient_get_for_user as patient_get_for_user
from .patients import patient_list_for_user as patient_list_for_user
from .predictions import acknowledgement_list_for_prediction as acknowledgement_list_for_prediction
from .predictions import feedback_list_for_prediction as feedback_list_for_prediction
from .predictions import prediction_get_for_user as prediction_get_for_user
from .predictions import prediction_list_for_user as prediction_list_for_user
from .studies import NoAiResultWaiting as NoAiResultWaiting
from .studies import acknowledgement_list_for_study as acknowledgement_list_for_study
from .studies import study_acknowledgement_of_the_study as study_acknowledgement_of_the_study
from .studies import study_dicom_date as study_dicom_date
from .studies import study_get_for_user as study_get_for_user
from .studies import study_get_with_results as study_get_with_results
from .studies import study_list_filter as study_list_filter
from .studies import study_list_for_user as study_list_for_user
from .studies import study_list_with_film_counts as study_list_with_film_counts
from .studies import study_list_with_row_facts as study_list_with_row_facts
from .studies import study_no_ai_result_waiting as study_no_ai_result_waiting
from .studies import study_read_annotation as study_read_annotation
from .studies import study_read_exists as study_read_exists
from .studies import study_taken_on as study_taken_on
from .study_results import FilmRefusal as FilmRefusal
from .study_results import FilmResult as FilmResult
from .study_results import StudyResult as StudyResult
from .study_results import StudySummary as StudySummary
from .study_results import study_film_results as study_film_results
from .study_results import study_result as study_result
from .study_results import study_summary as study_summary
from .training_runs import training_run_get as training_run_get
from .training_runs import training_run_list as training_run_list
