# ctest `cpp_package_consumer`: installs the build into BUILD/package_test/prefix, builds
# examples/cpp/consumer against it with find_package(tilegraph) and runs its check.
set(root ${BUILD}/package_test)
file(REMOVE_RECURSE ${root})
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}")
  endif()
endfunction()
run(${CMAKE_COMMAND} --install ${BUILD} --prefix ${root}/prefix)
run(${CMAKE_COMMAND} -S ${SOURCE}/examples/cpp/consumer -B ${root}/build -G Ninja
    -DCMAKE_PREFIX_PATH=${root}/prefix -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build ${root}/build)
run(${root}/build/onnx_mlp --check)
