# Activate the project's env speech_frcrn_ans_cirm_16k in every shell of the image (sourced from
# /etc/profile.d for login shells and /etc/bash.bashrc for Jupyter terminals and `docker exec -it … bash`).
# ENV_NAME and CONDA_DIR come from the image's environment.
if [ -f "${CONDA_DIR}/etc/profile.d/conda.sh" ]; then
    . "${CONDA_DIR}/etc/profile.d/conda.sh"
    conda activate "${ENV_NAME}"
else
    # an image built with ENV_BUILDER=venv has no conda; its env is a venv at the same prefix
    case ":${PATH}:" in
    *":${CONDA_DIR}/envs/${ENV_NAME}/bin:"*) ;;
    *) PATH="${CONDA_DIR}/envs/${ENV_NAME}/bin:${PATH}" ;;
    esac
    export PATH
fi
