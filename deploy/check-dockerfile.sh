#!/usr/bin/env bash
# Static checks of deploy/Dockerfile against the rest of the repository (no container engine
# needed; `make lint` runs it):
#
#   1. every script the Makefile's `models:` recipe runs is run by a RUN of the Dockerfile,
#      in a stage that has copied scripts/ first, and every such stage is copied into the
#      final (runtime) stage;
#   2. every model the services use by default (common/src/config.rs
#      DEFAULT_MODERATION_MODELS, and the models deploy/k8s/configmap.yaml and
#      deploy/compose.yaml name) is the MODEL_NAME of one of those scripts;
#   3. every libonnxruntime.so.<version> named in the Dockerfile, compose.yaml and k8s/
#      is the version scripts/fetch-onnxruntime.sh fetches;
#   4. hadolint, when it is installed (DL3008, pinning apt package versions, is ignored: the
#      Debian release is pinned and its security updates are wanted).
#
# Exit 0 when everything holds; otherwise every failure is printed and the exit status is 1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCKERFILE="${DOCKERFILE:-$ROOT/deploy/Dockerfile}"
MAKEFILE="${MAKEFILE:-$ROOT/Makefile}"
failures=0

fail() { echo "check-dockerfile: FAIL: $*" >&2; failures=$((failures + 1)); }
ok() { echo "check-dockerfile: ok: $*" >&2; }

# The Makefile's `models:` recipe (its tab-indented lines), one script per line, in order.
make_scripts() {
    awk '/^models:/ { in_recipe = 1; next }
         in_recipe && /^\t/ { print; next }
         in_recipe { exit }' "$MAKEFILE" | grep -o 'scripts/[A-Za-z0-9_.-]*\.sh' || true
}

# The Dockerfile's instructions, one per line: comments dropped, continuations joined.
instructions() {
    awk '/^[[:space:]]*#/ { next }
         { line = line $0 }
         /\\$/ { sub(/\\$/, "", line); next }
         { if (line ~ /[^[:space:]]/) print line; line = "" }' "$DOCKERFILE"
}

# "<stage> <script>" for every script a RUN runs; "<stage> !<script>" when the stage had not
# copied scripts/ yet; "final <stage>" for the last stage; "from <stage>" for each stage the
# final stage copies from.
stage_facts() {
    instructions | awk '
        toupper($1) == "FROM" {
            stage = ""; copied = 0; n++
            for (i = 2; i <= NF; i++) if (toupper($i) == "AS") stage = $(i + 1)
            if (stage == "") stage = "stage" n
            last = stage; delete from
            next
        }
        toupper($1) == "COPY" && $0 ~ /[[:space:]]scripts\/?[[:space:]]/ { copied = 1 }
        toupper($1) == "COPY" {
            for (i = 2; i <= NF; i++) if ($i ~ /^--from=/) { f = $i; sub(/^--from=/, "", f); from[f] = 1 }
        }
        toupper($1) == "RUN" {
            line = $0
            while (match(line, /scripts\/[A-Za-z0-9_.-]+\.sh/)) {
                print stage " " (copied ? "" : "!") substr(line, RSTART, RLENGTH)
                line = substr(line, RSTART + RLENGTH)
            }
        }
        END { print "final " last; for (f in from) print "from " f }'
}

# --- 1. the scripts of `make models` -----------------------------------------------------
mapfile -t wanted < <(make_scripts)
[[ ${#wanted[@]} -gt 0 ]] || fail "no scripts/*.sh found in the Makefile's models: recipe"
facts="$(stage_facts)"
final="$(sed -n 's/^final //p' <<<"$facts")"
built_by=()
for script in "${wanted[@]}"; do
    stages="$(awk -v s="$script" '$2 == s || $2 == "!" s { print $1 }' <<<"$facts" | sort -u | tr '\n' ' ')"
    if [[ -z "$stages" ]]; then
        fail "make models runs $script, the Dockerfile does not"
        continue
    fi
    if awk -v s="!$script" '$2 == s { found = 1 } END { exit !found }' <<<"$facts"; then
        fail "$script runs in a stage before scripts/ is copied into it"
    fi
    for stage in $stages; do
        if [[ "$stage" != "$final" ]] && ! grep -qx "from $stage" <<<"$facts"; then
            fail "stage $stage runs $script but the final stage ($final) copies nothing from it"
        fi
    done
    built_by+=("$script")
    ok "$script runs in stage(s) ${stages% }"
done

# --- 2. the default models are built by those scripts --------------------------------------
model_names() {
    # DEFAULT_MODERATION_MODELS in common/src/config.rs
    sed -n 's/.*DEFAULT_MODERATION_MODELS[^=]*= *\[\(.*\)\];.*/\1/p' "$ROOT/common/src/config.rs" \
        | tr ',' '\n' | tr -d ' "'
    # GATEHOUSE_MODERATION_MODELS / GATEHOUSE_TRANSLATION_MODELS in the deployment files
    grep -hE '^[[:space:]]*-?[[:space:]]*GATEHOUSE_(MODERATION|TRANSLATION)_MODELS[:=]' \
        "$ROOT/deploy/k8s/"*.yaml "$ROOT/deploy/compose.yaml" 2>/dev/null \
        | sed 's/^[^:=]*[:=][[:space:]]*//; s/["'"'"']//g' | tr ',' '\n' | tr -d ' '
}
mapfile -t models < <(model_names | grep -v '^$' | sort -u)
[[ ${#models[@]} -gt 0 ]] || fail "found no default model names (DEFAULT_MODERATION_MODELS)"
for model in "${models[@]}"; do
    script=""
    for s in "${built_by[@]}"; do
        if grep -qx "MODEL_NAME=\"$model\"" "$ROOT/$s"; then script="$s"; fi
    done
    if [[ -n "$script" ]]; then
        ok "model $model is built by $script"
    else
        fail "model $model is used by default but no script the Dockerfile runs builds it"
    fi
done
# The translation models make models bundles (served by default when
# GATEHOUSE_TRANSLATION_MODELS is empty).
for s in "${built_by[@]}"; do
    name="$(sed -n 's/^MODEL_NAME="\(.*\)"$/\1/p' "$ROOT/$s")"
    [[ -n "$name" ]] && ok "the image build runs $s, which builds $name"
done

# --- 3. one ONNX Runtime version ----------------------------------------------------------
ort="$(sed -n 's/^ORT_VERSION="\(.*\)"$/\1/p' "$ROOT/scripts/fetch-onnxruntime.sh")"
[[ -n "$ort" ]] || fail "no ORT_VERSION in scripts/fetch-onnxruntime.sh"
while IFS=: read -r file version; do
    [[ "$version" == "libonnxruntime.so.$ort" ]] \
        || fail "$file names $version, scripts/fetch-onnxruntime.sh fetches libonnxruntime.so.$ort"
done < <(grep -oH 'libonnxruntime\.so\.[0-9][0-9.]*[0-9]' "$DOCKERFILE" "$ROOT/deploy/compose.yaml" \
    "$ROOT/deploy/k8s/"*.yaml | sort -u)
ok "ONNX Runtime libonnxruntime.so.$ort everywhere"

# --- 4. hadolint (optional) ---------------------------------------------------------------
if command -v hadolint >/dev/null 2>&1; then
    if hadolint --ignore DL3008 "$DOCKERFILE"; then
        ok "hadolint"
    else
        fail "hadolint"
    fi
else
    echo "check-dockerfile: hadolint not installed; skipped" >&2
fi

if [[ $failures -gt 0 ]]; then
    echo "check-dockerfile: $failures failure(s)" >&2
    exit 1
fi
