# tl_cuda_architectures(OUT_VAR ARCH...): the CUDA_ARCHITECTURES target property for the list a user
# gives as CMAKE_CUDA_ARCHITECTURES. Each plain architecture ("80", "90a") becomes real code
# ("80-real"), and the newest plain one also embeds PTX ("90-virtual") so that newer GPUs can JIT it.
# Entries CMake itself understands as a whole ("native", "all", "all-major") and entries that already
# carry a suffix ("86-real", "90-virtual") pass through unchanged; duplicates are dropped.
#   90         -> 90-real;90-virtual
#   80;90      -> 80-real;90-real;90-virtual
#   native     -> native
function(tl_cuda_architectures out_var)
  set(result "")
  set(newest "")
  set(newest_number -1)
  foreach(arch IN LISTS ARGN)
    if(arch MATCHES "^([0-9]+)[a-z]?$")
      list(APPEND result "${arch}-real")
      if(CMAKE_MATCH_1 GREATER newest_number)
        set(newest_number ${CMAKE_MATCH_1})
        set(newest "${arch}")
      endif()
    elseif(arch MATCHES "^(native|all|all-major)$" OR arch MATCHES "^[0-9]+[a-z]?-(real|virtual)$")
      list(APPEND result "${arch}")
    else()
      message(FATAL_ERROR "CMAKE_CUDA_ARCHITECTURES: '${arch}' is not an architecture (expected a number such as 90, "
                          "NN-real, NN-virtual, native, all or all-major)")
    endif()
  endforeach()
  if(NOT newest STREQUAL "")
    list(APPEND result "${newest}-virtual")
  endif()
  list(REMOVE_DUPLICATES result)
  set(${out_var} "${result}" PARENT_SCOPE)
endfunction()

# tl_default_cuda_architectures(OUT_VAR): "native" when nvidia-smi reports a GPU at configure time (the
# build is for this machine), else 90 (Hopper, with PTX for newer GPUs).
function(tl_default_cuda_architectures out_var)
  set(value 90)
  find_program(TL_NVIDIA_SMI nvidia-smi)
  if(TL_NVIDIA_SMI)
    execute_process(COMMAND "${TL_NVIDIA_SMI}" --query-gpu=compute_cap --format=csv,noheader
                    RESULT_VARIABLE rc OUTPUT_VARIABLE caps ERROR_QUIET TIMEOUT 20)
    if(rc EQUAL 0 AND caps MATCHES "[0-9]+\\.[0-9]+")
      set(value native)
    endif()
  endif()
  set(${out_var} ${value} PARENT_SCOPE)
endfunction()
