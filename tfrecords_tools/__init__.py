"""Command-line tools that write the TFRecords keras_astpe trains on
(`python -m tfrecords_tools.<dataset>`).

The tools run TensorFlow ops only. Importing the package starts TensorFlow as
`keras_astpe_startup.start_tensorflow()` does, before any tool imports Keras (which imports
TensorFlow on its TensorFlow backend): without its start-up lines, in the converters'
forkserver workers too.
"""

import keras_astpe_startup

keras_astpe_startup.start_tensorflow()
