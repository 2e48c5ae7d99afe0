"""In-cluster identity check: what `kubectl auth whoami` does, from inside a pod.

Loads the in-cluster configuration exactly as an operator would (token and ca.crt at
/var/run/secrets/kubernetes.io/serviceaccount/, KUBERNETES_SERVICE_HOST/PORT), asks the
API server who it is (SelfSubjectReview) and prints ``username: NAME``.
"""

from kubernetes import client, config

config.load_incluster_config()
review = client.AuthenticationV1Api().create_self_subject_review(
    client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
)
print(f"username: {review.status.user_info.username}", flush=True)
