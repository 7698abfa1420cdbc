#!/bin/sh
# One-shot set-up of MinIO for the stack (the minio-init service, minio/mc image): the buckets
# `mlflow` (MLflow artifacts) and `dvc` (the DVC remote), and one access key per bucket whose
# policy reaches that bucket only, so neither MLflow nor DVC holds the root credentials.
# Idempotent: it can run on every `docker compose up`. Credentials come from the environment.
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"
: "${MLFLOW_S3_ACCESS_KEY_ID:?}" "${MLFLOW_S3_SECRET_ACCESS_KEY:?}"
: "${DVC_S3_ACCESS_KEY_ID:?}" "${DVC_S3_SECRET_ACCESS_KEY:?}"

mc alias set stack "${MINIO_URL:-http://minio:9000}" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"

# bucket_user BUCKET ACCESS_KEY_ID SECRET_ACCESS_KEY
bucket_user() {
    bucket=$1
    mc mb --ignore-existing "stack/$bucket"
    # The policy file is written with the shell's printf: the mc image is minimal.
    policy_file="${TMPDIR:-/tmp}/$bucket-policy.json"
    printf '%s\n' \
        '{"Version": "2012-10-17", "Statement": [' \
        '  {"Effect": "Allow",' \
        '   "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],' \
        "   \"Resource\": [\"arn:aws:s3:::$bucket\"]}," \
        '  {"Effect": "Allow",' \
        '   "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",' \
        '              "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],' \
        "   \"Resource\": [\"arn:aws:s3:::$bucket/*\"]}" \
        ']}' >"$policy_file"
    mc admin policy create stack "$bucket-readwrite" "$policy_file"
    mc admin user add stack "$2" "$3"
    # Attaching a policy that is already attached is an error for mc: check first (with the
    # shell alone: the mc image has no grep).
    case "$(mc admin user info stack "$2")" in
        *"$bucket-readwrite"*) ;;
        *) mc admin policy attach stack "$bucket-readwrite" --user "$2" ;;
    esac
    echo "bucket $bucket ready, access key $2"
}

bucket_user mlflow "$MLFLOW_S3_ACCESS_KEY_ID" "$MLFLOW_S3_SECRET_ACCESS_KEY"
bucket_user dvc "$DVC_S3_ACCESS_KEY_ID" "$DVC_S3_SECRET_ACCESS_KEY"
