#compdef xllm

_xllm_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _XLLM_COMPLETE=complete_zsh xllm)
}

compdef _xllm_completion xllm
