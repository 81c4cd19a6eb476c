from setuptools import find_packages, setup

install_requires = [
    'torch>=2.4',
    'torchvision>=0.19',
    'torch-geometric>=2.6',
    'networkx>=3.0',
    'numpy>=1.24',
    'scipy>=1.10',
    'tqdm>=4.60',
    'matplotlib>=3.7',
]

extras_require = {
    # PyG uses torch-scatter for its scatter kernels when it is importable.
    'scatter': ['torch-scatter'],
    # ogb's loaders call a bare torch.load, which fails on torch >= 2.6.
    'ogb': ['ogb'],
    'h5': ['h5py>=3.8'],
    'sklearn': ['scikit-learn>=1.3'],
    'test': ['pytest>=7', 'h5py>=3.8', 'scikit-learn>=1.3', 'einops'],
}

setup(
    name='pyg_ghn',
    version='0.1.0',
    description='Graph HyperNetworks (GHN-2) for PyTorch Geometric: predict the parameters '
    'of unseen neural networks in one forward pass.',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    packages=find_packages(include=['pyg_ghn', 'pyg_ghn.*']),
    package_data={'pyg_ghn': ['checkpoints/*.pt']},
    install_requires=install_requires,
    extras_require=extras_require,
    entry_points={'console_scripts': ['pyg-ghn=pyg_ghn.cli:main']},
)
